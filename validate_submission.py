#!/usr/bin/env python
"""Check that a submission file is what EvalAI accepts, and that it is what the checkpoints say.

    python validate_submission.py mc_maze sub/mc_maze/mc_maze_submission.h5
    python validate_submission.py mc_maze FILE --recompute sub/mc_maze/ensemble.json   # re-infer members
    python validate_submission.py mc_maze FILE --recompute EXPERIMENT_DIR --size 8     # top-8 mean
    python validate_submission.py mc_maze FILE --score eval_data_test.h5               # nlb_tools scores
    python validate_submission.py mc_maze FILE --published ROOT                        # AE Studio 2021 layout

Always checks the format: the dataset's group, the six tensors, their shapes (from the local
test-phase tensors when the data is present, else the registry and nlb_tools PARAMS), float,
finite, non-negative. Each problem is one line naming the tensor, the expectation and the finding.
``--recompute`` loads every member checkpoint (weights_only), predicts the test phase, averages with
the recorded weights, smooths as ensemble.json records, and compares with the file (rtol 1e-5, max abs/rel diff per tensor).
``--published ROOT`` does the same from a folder of published 2021 checkpoints: see
nlbpipe/published.py for what that layout allows. Exit 0 when every requested check passes, 1 when a
check fails, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nlbpipe.cli import ArgumentParser, non_negative_float, positive_int, run_reporting_errors


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help="dataset key (the submission group), e.g. mc_maze or mc_maze_20")
    p.add_argument("file", type=Path, help="the submission .h5")
    p.add_argument("--recompute", metavar="EXPERIMENT_DIR_OR_ENSEMBLE_JSON",
                   help="rebuild the test rates from the member checkpoints and compare")
    p.add_argument("--published", metavar="ROOT", help="rebuild from AE Studio's published 2021 checkpoint folder")
    p.add_argument("--size", type=positive_int, help="top-N size for --recompute EXPERIMENT_DIR or --published (default: recorded / AESMTE3's)")
    p.add_argument("--rtol", type=non_negative_float, default=1e-5, help="relative tolerance of the comparison (default 1e-5)")
    p.add_argument("--atol", type=non_negative_float, default=0.0, help="absolute tolerance of the comparison (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="inference batch size for --recompute (default 256, as training wrote)")
    p.add_argument("--score", metavar="TARGETS_H5", help="score with nlb_tools.evaluation.evaluate against these targets")
    p.add_argument("--registry-shapes", action="store_true",
                   help="take expected shapes from the registry even when local test data is present")
    p.add_argument("--raw-dir", help="data root for the local test-phase tensors (default NLB_DATA_RAW)")
    p.add_argument("--cache-dir", help="tensor cache (default NLB_CACHE_DIR)")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args) -> int:
    from nlbpipe import submission as sub
    from nlbpipe.settings import get_settings

    sub.submission_group(args.dataset)
    settings = get_settings()
    raw = args.raw_dir or settings.data_raw
    cache = args.cache_dir or settings.cache_dir
    failed = False

    expected = sub.expected_shapes(args.dataset, raw, cache, use_local=not args.registry_shapes)
    problems = sub.check_submission(args.file, args.dataset, expected.shapes)
    print(f"format ({args.file}, group {args.dataset}; shapes from {expected.source}):")
    if problems:
        failed = True
        for line in problems:
            print(f"  FAIL {line}")
    else:
        print("  ok: six float tensors, expected shapes, finite, non-negative")

    if args.recompute or args.published:
        if args.recompute and args.published:
            raise sub.SubmissionError("use --recompute or --published, not both")
        if args.published:
            from nlbpipe.published import published_members, rederive_published

            members = published_members(args.published, args.dataset, args.size)
            what = f"published checkpoints in {args.published} (top {len(members)} of models.csv)"
            reference = rederive_published(members)
        else:
            ensemble = sub.resolve_ensemble(args.recompute, args.file, args.size)
            what = f"{len(ensemble.members)} member checkpoint(s) from {args.recompute}"
            if ensemble.smoothing.sd_ms:
                what += f", smoothed {ensemble.smoothing.sd_ms:g} ms"
            reference = sub.recompute_rates(
                ensemble, predict=lambda ckpt: sub.infer_test_rates(ckpt, args.batch_size), log=log)
        group = sub.read_submission(args.file).get(args.dataset, {})
        diffs = sub.compare_rates(reference, group, rtol=args.rtol, atol=args.atol)
        ok = all(d.ok for d in diffs)
        failed |= not ok
        print(f"recompute ({what}; rtol {args.rtol:g}, atol {args.atol:g}): {'ok' if ok else 'FAIL'}")
        for d in diffs:
            print(f"  {d.line()}")

    if args.score:
        if problems:
            print("score: skipped, the file has format problems")
        else:
            rows = sub.score_submission(args.file, args.score)
            print(f"score (nlb_tools.evaluation.evaluate against {args.score}):")
            for line in sub.metrics_table(rows):
                print(f"  {line}")
    print("FAILED" if failed else "PASSED")
    return 1 if failed else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_reporting_errors(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
