#!/usr/bin/env python
"""Build the EvalAI submission for one dataset from an experiment's ranked checkpoints.

    python build_ensemble.py mc_maze_small                       # the dataset's most recent experiment
    python build_ensemble.py mc_maze_small --experiment NAME --method topn --size auto
    python build_ensemble.py --merge all.h5 sub/mc_maze/mc_maze_submission.h5 sub/mc_rtt/mc_rtt_submission.h5

Reads checkpoints.csv and each checkpoint's rates_val.h5 / rates_test.h5 (no inference). Writes to
``--out`` (default ``<submissions_dir>/<dataset_key>/``): ``<dataset_key>_submission.h5`` (test
rates, the file to upload; the chosen ensemble's rates smoothed over time by a width chosen on val
co-bps, ``--smooth-ms``), ``rates_val.h5``, ``ensemble_curve.png`` and ``ensemble.json``.
``--merge OUT FILE...`` instead combines per-dataset submissions into one upload file, refusing a
dataset group that appears in two files. See nlbpipe/ensemble/ for the methods.
"""

from __future__ import annotations

import argparse
import json
import sys

from nlbpipe.cli import ArgumentParser, non_negative_int, number, positive_int, run_reporting_errors

size_arg = number(int, low=1, words=("auto",), what="a positive integer or 'auto'")
# one fold has no held-out part: it is not cross-validation
folds_arg = number(int, low=0, but_not=(1,), what="0 (no cross-validation) or at least 2 folds")
smooth_arg = number(float, low=0, words=("auto",), what="a width in ms (0 = none) or 'auto'")


def parse_args(argv=None):
    from nlbpipe.ensemble import MAX_MODELS, METHODS
    from nlbpipe.ensemble import SELECT_DEFAULTS as D  # the defaults, stated once

    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", nargs="?", help="dataset key, e.g. mc_maze or mc_maze_small_20")
    p.add_argument("--experiment", help="experiment folder, or its name under <results_dir>/<dataset_key>/")
    p.add_argument("--max-models", type=positive_int, default=MAX_MODELS,
                   help="library: the top M checkpoints by val co-bps (default %(default)s)")
    p.add_argument("--size", type=size_arg, default=D["size"],
                   help="top-N size, or 'auto' = argmax of val co-bps (default %(default)s)")
    p.add_argument("--method", choices=METHODS, default=D["method"],
                   help="both: compute both, submit the one with the higher cross-validated co-bps (default %(default)s)")
    p.add_argument("--greedy-max-size", type=positive_int, default=D["greedy_max_size"],
                   help="greedy: most picks (with replacement), default %(default)s")
    p.add_argument("--greedy-init", type=positive_int, default=D["n_init"],
                   help="greedy: start from the top K checkpoints (default %(default)s)")
    p.add_argument("--folds", type=folds_arg, default=D["folds"],
                   help="folds over val trials for the CV figures (0 = none; default %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=D["seed"], help="seed of the fold split (default %(default)s)")
    p.add_argument("--smooth-ms", type=smooth_arg, default="auto",
                   help="sd in ms of the Gaussian the ensemble's log rates are smoothed with over time; 'auto' "
                        "(default) picks it from 0-40 ms by val co-bps, 0 turns it off")
    p.add_argument("--targets", help="val-phase eval targets .h5 (nlb_tools format); default: from the experiment's data")
    p.add_argument("--out", help="output folder (default <submissions_dir>/<dataset_key>/)")
    p.add_argument("--merge", nargs="+", metavar="PATH", help="OUT FILE [FILE ...]: merge submissions into OUT")
    args = p.parse_args(argv)
    if args.merge is not None:
        if len(args.merge) < 2:
            p.error("--merge needs OUT and at least one FILE")
    elif not args.dataset:
        p.error("DATASET is required (or use --merge OUT FILE ...)")
    return args


def merge(paths) -> int:
    from nlbpipe.submission import merge_submissions

    out, files = paths[0], paths[1:]
    sources = merge_submissions(out, files)
    for group, file in sources.items():
        print(f"{group:<18} from {file}")
    print(f"wrote {out} ({len(sources)} dataset group(s))")
    return 0


def build(args) -> int:
    from nlbpipe import ensemble as ens
    from nlbpipe.datasets import resolve
    from nlbpipe.settings import get_settings
    from nlbpipe.submission import submission_group

    key = args.dataset
    _, bin_ms = resolve(key)
    submission_group(key)
    settings = get_settings()
    experiment = ens.find_experiment(key, args.experiment, settings.results_dir)
    out_dir = args.out or settings.submissions_dir / key
    log = ens.stderr_log
    log(f"experiment: {experiment}")
    targets = ens.val_targets(key, experiment, args.targets)
    spikes = targets[key]["eval_spikes_heldout"]
    result = ens.build_ensemble(
        experiment, spikes, method=args.method, size=args.size, max_models=args.max_models,
        greedy_max_size=args.greedy_max_size, n_init=args.greedy_init, folds=args.folds, seed=args.seed, log=log,
        smooth_ms=args.smooth_ms, bin_ms=bin_ms,
    )
    paths, metrics = ens.write_ensemble(result, experiment, key, out_dir, targets)

    print(f"{key}: {len(result.library)} checkpoint(s) in the library, top-N curve N = 1..{len(result.curve)}")
    for line in ens.summary_lines(result):
        print(line)
    print()
    print("val metrics")
    cols = [c for c in ("co_bps", "vel_r2", "psth_r2", "fp_bps", "tp_corr") if c in metrics.get("ensemble", {})]
    print(f"{'':<12}" + "".join(f"{c:>10}" for c in cols))
    for row in ("best_single", "ensemble"):
        print(f"{row:<12}" + "".join(f"{metrics[row][c]:>10.4f}" for c in cols))
    print()
    members = result.members
    print(f"members ({result.chosen.method}, {len(members)} checkpoint(s)):")
    for ckpt, w, n in members[:20]:
        print(f"  {w:6.3f}  {ckpt.trial_id}/{ckpt.kind}  {ckpt.checkpoint_dir}")
    if len(members) > 20:
        print(f"  ... {len(members) - 20} more in ensemble.json")
    for name, path in paths.items():
        print(f"{name:<14} {path}")
    print(json.dumps({"dataset": key, "method": result.chosen.method, "size": result.chosen.size,
                      "val_co_bps": result.val_co_bps,
                      "smooth_ms": result.smoothing.sd_ms if result.smoothing else 0, "submission": str(paths["submission"])}))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_reporting_errors(lambda: merge(args.merge) if args.merge is not None else build(args))


if __name__ == "__main__":
    sys.exit(main())
