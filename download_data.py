#!/usr/bin/env python
"""Fetch NLB'21 datasets from DANDI, or write synthetic stand-ins with known rates.

    python download_data.py [DATASET ...|all]                      # into $NLB_DATA_RAW
    python download_data.py --synthetic DATASET ... [--seed N] [--scale F] [--easy]   # into $NLB_SYNTHETIC_RAW
    python download_data.py --check [DATASET ...] [--synthetic]    # files vs registry and nlb_tools

Every download and synthetic write ends with the same check; a mismatch exits 1, one line each.
"""

from __future__ import annotations

import argparse
import logging
import sys

from nlbpipe.cli import ArgumentParser, non_negative_int, run_reporting_errors
from nlbpipe.datasets import DATASETS, UnknownDatasetError
from nlbpipe.download import download
from nlbpipe.settings import get_settings
from nlbpipe.synthetic import write_synthetic


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="*", default=["all"], metavar="DATASET",
                   help=f"one or more of: all, {', '.join(DATASETS)} (default all)")
    p.add_argument("--synthetic", action="store_true",
                   help="write synthetic stand-ins (NLB_SYNTHETIC_RAW) instead of downloading")
    p.add_argument("--seed", type=non_negative_int, default=0, help="synthetic: random seed (default 0)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="synthetic: share of the real trial counts, in (0, 1] (default 1)")
    p.add_argument("--easy", action="store_true",
                   help="synthetic: the easy stand-in (units at ~13 Hz, log-linear held-out map, no extra "
                        "variability) instead of the realistic one (firing like the real files)")
    p.add_argument("--force", action="store_true", help="synthetic: rewrite even if present")
    p.add_argument("--check", action="store_true",
                   help="only check the files present (units, trials, fields, tensor shapes) against the "
                        "registry; with --synthetic, the stand-ins")
    p.add_argument("--no-check", action="store_true", help="skip the check after a download or write")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def run_check(names, root, cache_dir) -> int:
    """``nlbpipe.check`` for each dataset: what was found, then one line per mismatch; 1 if any."""
    from nlbpipe.check import check_dataset

    mismatches = 0
    for name in names:
        report, bad = check_dataset(name, root, cache_dir)
        for line in report:
            print(f"  {line}")
        for line in bad:
            print(f"mismatch: {line}", file=sys.stderr)
        mismatches += len(bad)
        print(f"{name}: {'ok' if not bad else f'{len(bad)} mismatch(es)'}", flush=True)
    return 1 if mismatches else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("nlbpipe").setLevel(logging.INFO)
    names = list(DATASETS) if "all" in args.datasets else args.datasets
    return run_reporting_errors(lambda: fetch(args, names),
                                interrupted="error: interrupted (a download resumes from its .part file next time)")


def fetch(args: argparse.Namespace, names: list[str]) -> int:
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise UnknownDatasetError(f"unknown dataset {unknown[0]!r}; valid: all, {', '.join(DATASETS)}")
    settings = get_settings()
    root = settings.synthetic_raw if args.synthetic else settings.data_raw
    if not args.check:
        for name in names:
            if args.synthetic:
                realism = "easy" if args.easy else "realistic"
                print(f"writing synthetic {name} (seed {args.seed}, scale {args.scale}, {realism}) "
                      f"under {settings.synthetic_raw} ...", flush=True)
                paths = write_synthetic(name, settings.synthetic_raw, seed=args.seed,
                                        scale=args.scale, force=args.force, realism=realism)
            else:
                print(f"downloading {name} into {settings.data_raw} ...", flush=True)
                paths = download(name, settings.data_raw, progress=not args.no_progress)
            for path in paths:
                print(f"  {path}")
        if args.no_check:
            return 0
    return run_check(names, root, settings.cache_dir)


if __name__ == "__main__":
    sys.exit(main())
