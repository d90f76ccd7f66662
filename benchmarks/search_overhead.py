#!/usr/bin/env python
"""Seconds of Ray Tune + searcher overhead per trial, beyond the training itself.

Trains N short NDTs twice on a synthetic dataset: once by calling ``nlbpipe.ndt.train.train`` directly
in a loop, once through ``run_hyperopt.py`` (Ray start, skopt suggestions, Tune bookkeeping and
checkpoints, one trial at a time so the two are comparable), with the same training budget.
The ranking step is excluded (timed separately). Prints the figures; the last line is JSON.

    python benchmarks/search_overhead.py [--trials 6] [--updates 100] [--dataset mc_maze_small]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--updates", type=int, default=100)
    p.add_argument("--dataset", default="mc_maze_small")
    p.add_argument("--scale", type=float, default=0.3, help="synthetic dataset scale")
    p.add_argument("--keep", action="store_true", help="keep the temporary NLB_HOME")
    args = p.parse_args()

    home = Path(tempfile.mkdtemp(prefix="nlb_search_overhead_"))
    os.environ["NLB_HOME"] = str(home)
    for var in ("NLB_DATA_RAW", "NLB_SYNTHETIC_RAW", "NLB_CACHE_DIR", "CONFIG_DIR", "RAY_TUNE_HOME"):
        os.environ.pop(var, None)
    from nlbpipe.config import load_config
    from nlbpipe.configs import generate
    from nlbpipe.ndt.train import train
    from nlbpipe.search_space import load_search_space
    from nlbpipe.settings import get_settings
    from nlbpipe.synthetic import write_synthetic
    from nlbpipe.tensors import load_eval_targets, load_tensors

    s = get_settings()
    print(f"synthetic {args.dataset} (scale {args.scale}) in {home}", flush=True)
    write_synthetic(args.dataset, s.synthetic_raw, seed=0, scale=args.scale)
    load_tensors(args.dataset, "val", s.synthetic_raw, s.cache_dir)  # warm the cache for both arms
    load_eval_targets(args.dataset, "val", s.synthetic_raw, s.cache_dir)
    generate([args.dataset], s.config_dir, s.synthetic_raw, s.cache_dir)
    sets = [f"train.max_updates={args.updates}", "train.val_interval=20", "train.num_threads=1"]

    # Direct: the same number of trainings, hyperparameters drawn from the same space.
    cfg = load_config(s.config_dir / f"{args.dataset}.yaml", sets)
    space = load_search_space(s.config_dir / f"{args.dataset}.search.yaml")
    import numpy as np

    from nlbpipe.config import apply_overrides

    rng = np.random.RandomState(0)
    t0 = time.perf_counter()
    for i in range(args.trials):
        point = [d.skopt().rvs(random_state=rng)[0] for d in space.dimensions]
        train(apply_overrides(cfg, space.point_to_config(point)), home / "direct" / str(i))
        print(f"  direct training {i + 1}/{args.trials}: {time.perf_counter() - t0:.1f} s", flush=True)
    direct = time.perf_counter() - t0

    cmd = [sys.executable, str(REPO / "run_hyperopt.py"), args.dataset, "--samples", str(args.trials),
           "--max-concurrent", "1", "--num-cpus", "1", "--quiet", "--n-initial-points", "3"]
    for item in sets:
        cmd += ["--set", item]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    total = time.perf_counter() - t0
    if out.returncode != 0:
        print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "run_hyperopt.py"), args.dataset, "--rank-only"],
                   capture_output=True, text=True, check=True)
    rank = time.perf_counter() - t0
    search = total - rank  # the search command ranks at its end too; take that share out
    per_trial = (search - direct) / args.trials
    print(f"direct: {direct:.1f} s for {args.trials} trainings of {args.updates} updates")
    print(f"run_hyperopt: {search:.1f} s (+ {rank:.1f} s ranking {args.trials} trials' checkpoints)")
    print(f"overhead: {per_trial:.2f} s per trial (Ray start included, amortised over {args.trials} trials)")
    if not args.keep:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps({"benchmark": "search_overhead", "trials": args.trials, "updates": args.updates,
                      "direct_s": round(direct, 2), "search_s": round(search, 2), "ranking_s": round(rank, 2),
                      "overhead_s_per_trial": round(per_trial, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
