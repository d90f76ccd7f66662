"""How realistic is a synthetic stand-in? Its firing statistics, its truth and the tuned smoothing baseline.

Writes a synthetic dataset (default: full-size mc_maze_small, seed 0, realistic) into a temporary
root and prints, per bin size, beside the targets README.md states:

* firing: mean rate of the held-in units in the test trials' aligned window (from the written
  spikes), median unit and the spread (sd of ln rate) across units of the train trials' rates;
* modulation depth: per unit, the sd of the true rate over the train trials' bins over its mean
  (median over units);
* the tuned smoothing kernel beside the one nlb_tools chose on the real data (its
  ``smoothing_cv_sweep.py``, grid 30-60 ms; ``nlbpipe.baselines.DEFAULTS``);
* scores on the val phase (nlb_tools.evaluation.evaluate): the true rates (the ceiling) and the
  smoothing baseline tuned on val (the floor; ``nlbpipe.baselines.tune_smoothing``), and the
  baseline's share of the truth's co-bps (how far a log-linear map from held-in to held-out falls
  short). Truth psth R2 below 1 is trial-to-trial variability; truth vel R2 below 1 is behaviour
  noise.

    .venv/bin/python benchmarks/synthetic_realism.py [--dataset mc_maze_small] [--bins 5 20]
        [--seed 0] [--scale 1.0] [--realism realistic|easy]

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

import numpy as np  # noqa: E402
from nlb_tools.evaluation import evaluate  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from nlbpipe.baselines import DEFAULTS, smoothing_rates, tune_smoothing  # noqa: E402
from nlbpipe.datasets import dataset_key, resolve  # noqa: E402
from nlbpipe.synthetic import true_rates, write_synthetic  # noqa: E402
from nlbpipe.synthetic_rates import REALISM  # noqa: E402
from nlbpipe.tensors import load_eval_targets, load_tensors  # noqa: E402

# what a realistic mc_maze_small should show (README.md, "Synthetic stand-ins", gives the sources)
TARGETS = {"heldin_hz_test": 4.4, "truth_co_bps_20_val": 0.43, "smoothing_share_5": 0.29}


def _score(key, targets, rates):
    result = evaluate(targets, {key: rates})
    return {k.split("] ")[-1]: float(v) for split in result for _, d in split.items() for k, v in d.items()}


def _firing(key, root, cache):
    _, bin_ms = resolve(key)
    test = load_tensors(key, "test", raw_dir=root, cache_dir=cache)
    spikes = test["eval_spikes_heldin"]
    heldin_hz = float(np.nansum(spikes) / (spikes.shape[0] * spikes.shape[1] * bin_ms / 1000.0 * spikes.shape[2]))
    truth = true_rates(key, "val", root)
    rates = np.concatenate([truth["train_rates_heldin"], truth["train_rates_heldout"]], axis=2)
    unit_hz = rates.mean(axis=(0, 1)) * 1000.0 / bin_ms
    depth = rates.reshape(-1, rates.shape[2]).std(axis=0) / rates.mean(axis=(0, 1))
    return {"heldin_hz_test": heldin_hz, "unit_hz_median": float(np.median(unit_hz)),
            "unit_ln_sd": float(np.log(unit_hz).std()), "modulation_depth": float(np.median(depth))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mc_maze_small")
    p.add_argument("--bins", type=int, nargs="+", default=[5, 20], choices=(5, 20))
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--realism", default="realistic", choices=REALISM)
    args = p.parse_args(argv)
    out = {"dataset": args.dataset, "seed": args.seed, "scale": args.scale, "realism": args.realism,
           "targets": TARGETS, "bins": {}}
    # one BLAS thread: on a small shared machine OpenBLAS's spinning threads slow nlb_tools'
    # many small ridge solves 10x+; the figures do not depend on it
    with threadpool_limits(limits=1, user_api="blas"), tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "synthetic", Path(tmp) / "cache"
        t0 = time.perf_counter()
        write_synthetic(args.dataset, root, seed=args.seed, scale=args.scale, realism=args.realism)
        out["write_s"] = round(time.perf_counter() - t0, 1)
        print(f"{args.dataset} (seed {args.seed}, scale {args.scale}, {args.realism}): written in {out['write_s']}s")
        for bin_ms in args.bins:
            key = dataset_key(args.dataset, bin_ms)
            t0 = time.perf_counter()
            targets = load_eval_targets(key, "val", raw_dir=root, cache_dir=cache)
            firing = _firing(key, root, cache)
            truth = _score(key, targets, true_rates(key, "val", root))
            choice = tune_smoothing(key, root, cache)
            smooth = _score(key, targets, smoothing_rates(key, "val", root, cache, kern_sd_ms=choice["kern_sd_ms"],
                                                          alpha=choice["alpha"]))
            share = smooth["co-bps"] / truth["co-bps"] if truth["co-bps"] > 0 else float("nan")
            row = {"firing": firing, "truth": truth, "smoothing": smooth, "smoothing_share": share,
                   "smoothing_choice": {k: choice[k] for k in ("kern_sd_ms", "alpha")},
                   "nlb_tools_real_kern_sd_ms": DEFAULTS[args.dataset][0],
                   "seconds": round(time.perf_counter() - t0, 1)}
            out["bins"][bin_ms] = row
            print(f"{key} val ({row['seconds']}s):")
            print("  firing     " + "  ".join(f"{k}={v:.3f}" for k, v in firing.items())
                  + f"   (target heldin_hz_test {TARGETS['heldin_hz_test']})")
            for label, d in (("truth", truth), ("smoothing", smooth)):
                print(f"  {label:10s} " + "  ".join(f"{k}={v:.3f}" for k, v in d.items()))
            print(f"  smoothing: kern_sd_ms={choice['kern_sd_ms']:g} alpha={choice['alpha']:g}, "
                  f"{share:.0%} of truth's co-bps (nlb_tools' kernel on the real data: "
                  f"{DEFAULTS[args.dataset][0]} ms, from its 30-60 ms grid)")
    print(f"targets: {TARGETS}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
