"""How realistic is a synthetic stand-in? Score its ground truth and the smoothing baseline.

Writes a synthetic dataset (default: full-size mc_maze_small, seed 0) into a temporary root and
scores, with nlb_tools.evaluation.evaluate on the val phase: the true rates (the ceiling) and the
nlb_tools smoothing baseline (the floor). The target for mc_maze_small at 5 ms: truth co-bps in
[0.25, 0.6] and vel R2 > 0.7; smoothing clearly below the truth and above 0.

    .venv/bin/python benchmarks/synthetic_realism.py [--dataset mc_maze_small] [--bin 5] [--scale 1.0]

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlb_tools.evaluation import evaluate  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from nlbpipe.baselines import smoothing_rates  # noqa: E402
from nlbpipe.datasets import dataset_key  # noqa: E402
from nlbpipe.synthetic import true_rates, write_synthetic  # noqa: E402
from nlbpipe.tensors import load_eval_targets  # noqa: E402


def _score(key, targets, rates):
    result = evaluate(targets, {key: rates})
    return {k: float(v) for split in result for _, d in split.items() for k, v in d.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mc_maze_small")
    p.add_argument("--bin", type=int, default=5, choices=(5, 20))
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--phase", default="val", choices=("val", "test"))
    args = p.parse_args(argv)
    key = dataset_key(args.dataset, args.bin)
    # one BLAS thread: on a small shared machine OpenBLAS's spinning threads slow nlb_tools'
    # many small ridge solves 10x+; the figures do not depend on it
    with threadpool_limits(limits=1, user_api="blas"), tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "synthetic", Path(tmp) / "cache"
        t0 = time.perf_counter()
        write_synthetic(args.dataset, root, seed=args.seed, scale=args.scale)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        targets = load_eval_targets(key, args.phase, raw_dir=root, cache_dir=cache)
        t_tensors = time.perf_counter() - t0
        truth = _score(key, targets, true_rates(key, args.phase, root))
        t0 = time.perf_counter()
        smooth = _score(key, targets, smoothing_rates(key, args.phase, raw_dir=root, cache_dir=cache))
        t_smooth = time.perf_counter() - t0
    print(f"{key} {args.phase} (seed {args.seed}, scale {args.scale}): "
          f"write {t_write:.1f}s, tensors+targets {t_tensors:.1f}s, smoothing {t_smooth:.1f}s")
    for label, d in (("truth", truth), ("smoothing", smooth)):
        print(f"  {label:9s} " + "  ".join(f"{k}={v:.3f}" for k, v in d.items()))
    out = {"dataset_key": key, "phase": args.phase, "seed": args.seed, "scale": args.scale,
           "truth": truth, "smoothing": smooth, "write_s": round(t_write, 2)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
