"""``python -m nlbpipe.train CONFIG``: one NDT training run from a run config (``nlbpipe.ndt.train``).

The command users, docs and the GPU machine call; the run itself is ``nlbpipe.ndt.train.train``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import contracts
from .cli import ArgumentParser, run_reporting_errors
from .config import load_config
from .ndt.train import train


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m nlbpipe.train", description="Train one NDT from a run config.")
    parser.add_argument("config", type=Path, help="run config YAML (docs/architecture.md)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.lr=1e-3 (repeatable)")
    parser.add_argument("--run-dir", type=Path, default=None, help="run directory (default: runs/<config name>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    return run_reporting_errors(lambda: train_from_args(args))


def train_from_args(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    run_dir = args.run_dir or Path("runs") / args.config.stem
    result = train(cfg, run_dir)
    print(f"{result.status} at update {result.step}: " +
          ", ".join(f"{k}={v:.4f}" for k, v in result.best.items() if k.startswith("val_")))
    for kind, path in result.checkpoints.items():
        print(f"  {kind}: {path}")
    return 1 if result.status == contracts.DIVERGED else 0


if __name__ == "__main__":
    sys.exit(main())
