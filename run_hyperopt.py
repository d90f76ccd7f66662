#!/usr/bin/env python
"""Bayesian hyperparameter search over NDTs for one dataset key, then every checkpoint ranked.

    python run_hyperopt.py mc_maze                      # 100 trials, seed 42
    python run_hyperopt.py mc_maze --resume             # after Ctrl-C, a lost screen or a crash
    python run_hyperopt.py mc_maze --rank-only          # (re)write checkpoints.csv now
    python run_hyperopt.py mc_maze_small --samples 6 --max-concurrent 2 --set train.max_passes=100

Results: $RAY_TUNE_HOME/<dataset_key>/<name>/ (checkpoints.csv, search_progress.png, one
trial_<id>/run/ per trial holding its kept checkpoints).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nlbpipe.cli import (
    ArgumentParser,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_reporting_errors,
)
from nlbpipe.datasets import resolve
from nlbpipe.ranking import rank_experiment, top
from nlbpipe.ray_driver import interrupt_on_term
from nlbpipe.search import read_setup, run_search, search_exit, trial_outcomes
from nlbpipe.search_checks import ADDRESS_TIMEOUT_S
from nlbpipe.search_options import DEFAULT_SAMPLES, DEFAULT_SEED, METRIC_MODES, SCHEDULERS, SearchOptions
from nlbpipe.settings import get_settings


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="dataset key: mc_maze, mc_maze_20, mc_maze_small, ...")
    p.add_argument("--samples", type=positive_int, default=None,
                   help=f"trials in the whole search (default {DEFAULT_SAMPLES}; --resume: the stored number)")
    p.add_argument("--seed", type=non_negative_int, default=None,
                   help=f"searcher seed (default {DEFAULT_SEED}; --resume: the stored seed)")
    p.add_argument("--name", default=None, help="experiment name (default <dataset>_hyperopt)")
    p.add_argument("--config", type=Path, default=None,
                   help="run config (default CONFIG_DIR/<dataset>.yaml; its search space is <config>.search.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a run-config key for every trial, e.g. --set train.max_passes=10000 (repeatable)")
    p.add_argument("--metric", default="val_co_bps", choices=sorted(METRIC_MODES),
                   help="trial objective: val_co_bps is maximised, the losses minimised (default %(default)s)")
    p.add_argument("--scheduler", default="fifo", choices=SCHEDULERS, help="trial scheduler (default %(default)s)")
    p.add_argument("--gpus-per-trial", type=non_negative_float, default=None, help="default 0.5 if the cluster has GPUs, else 0")
    p.add_argument("--cpus-per-trial", type=positive_float, default=1.0, help="default %(default)s")
    p.add_argument("--max-concurrent", type=positive_int, default=None, help="trials at once (default: as resources allow)")
    p.add_argument("--n-initial-points", type=positive_int, default=10, help="random trials before the GP (default %(default)s)")
    p.add_argument("--acq-func", default="gp_hedge", choices=["gp_hedge", "EI", "PI", "LCB"],
                   help="skopt acquisition function (default %(default)s)")
    p.add_argument("--max-failures", type=non_negative_int, default=2, help="retries of a crashed trial (default %(default)s)")
    p.add_argument("--address", default=None,
                   help=f"join a running Ray cluster (e.g. auto or HEAD_IP:6379); gives up after {ADDRESS_TIMEOUT_S:g} s")
    p.add_argument("--num-cpus", type=positive_int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted experiment --name")
    p.add_argument("--rank-only", action="store_true", help="only (re)write checkpoints.csv of --name")
    p.add_argument("--quiet", action="store_true", help="less Ray output (no per-trial progress table)")
    return p.parse_args(argv)


def _resume_command(args) -> str:
    return f"run_hyperopt.py {args.dataset} --resume" + (f" --name {args.name}" if args.name else "")


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_reporting_errors(lambda: search(args),
                                interrupted=f"interrupted; continue with: {_resume_command(args)}")


def search(args: argparse.Namespace) -> int:
    settings = get_settings()
    outcomes: dict[str, str] | None = None
    code, last_line = 0, None
    interrupt_on_term()  # run_search installs it again once Ray has started (ray.init replaces it)
    resolve(args.dataset)
    opts = SearchOptions(
        dataset_key=args.dataset,
        config_path=args.config or settings.config_dir / f"{args.dataset}.yaml",
        results_dir=settings.results_dir, samples=args.samples, seed=args.seed, name=args.name,
        metric=args.metric, scheduler=args.scheduler, gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent,
        overrides=args.overrides, resume=args.resume, address=args.address, num_cpus=args.num_cpus,
        n_initial_points=args.n_initial_points, acq_func=args.acq_func, max_failures=args.max_failures,
        verbose=0 if args.quiet else 1,
    )
    if not args.rank_only:
        results = run_search(opts)
        outcomes = trial_outcomes(results)
        counts: dict[str, int] = {}
        for status in outcomes.values():
            counts[status] = counts.get(status, 0) + 1
        print("trials: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
        code, last_line = search_exit(outcomes, read_setup(opts.experiment_dir)["samples"])
        if code == 130:  # interrupted (Ctrl-C, SIGTERM, SIGHUP)
            print(f"{last_line}; continue with: {_resume_command(args)}", file=sys.stderr)
    ranked = rank_experiment(opts.experiment_dir)
    print(f"ranked {ranked.n_checkpoints} checkpoints of {ranked.n_trials} finished trials -> {ranked.csv_path}")
    if outcomes is None and ranked.skipped_running:
        print(f"  {len(ranked.skipped_running)} trial(s) not finished (running, interrupted or errored), not ranked")
    if ranked.failed:
        print(f"  {len(ranked.failed)} checkpoint(s) could not be scored (see the error column)")
    if ranked.n_checkpoints:
        print(top(opts.experiment_dir, 5)[["trial_id", "kind", "val_co_bps"]].to_string(index=False))
    if code == 1:
        print(f"error: {last_line} in {opts.experiment_dir}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
