#!/usr/bin/env python
"""Write CONFIG_DIR/<dataset_key>.yaml and <dataset_key>.search.yaml from nlbpipe/templates/.

    python generate_configs.py                  # all 14 dataset keys
    python generate_configs.py mc_maze mc_maze_20
    python generate_configs.py --synthetic mc_maze_small   # raw_dir = NLB_SYNTHETIC_RAW
"""

from __future__ import annotations

import argparse
import sys

from nlbpipe.cli import ArgumentParser, run_reporting_errors
from nlbpipe.configs import TEMPLATE_DIR, expand_keys, generate
from nlbpipe.settings import get_settings


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", metavar="DATASET", help="dataset keys (mc_maze, mc_maze_20, ...) or 'all' (default)")
    parser.add_argument("--synthetic", action="store_true", help="point data.raw_dir at the synthetic stand-ins (NLB_SYNTHETIC_RAW)")
    parser.add_argument("--force", action="store_true", help="overwrite configs even if they were edited by hand")
    parser.add_argument("--template-dir", default=str(TEMPLATE_DIR), help="templates to render (default: %(default)s)")
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: write_configs(args))


def write_configs(args: argparse.Namespace) -> int:
    settings = get_settings()
    raw_dir = settings.synthetic_raw if args.synthetic else settings.data_raw
    keys = expand_keys(args.datasets)
    written = generate(keys, settings.config_dir, raw_dir, settings.cache_dir,
                       force=args.force, template_dir=args.template_dir)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
