#!/usr/bin/env python
"""How long build_ensemble takes for 100 checkpoints of mc_maze's shape (target: under 30 s).

    python benchmarks/ensemble_speed.py [--checkpoints 100] [--distinct 10] [--method both]

Writes a temporary experiment folder the way run_hyperopt.py leaves one: checkpoints.csv and 100
checkpoint folders, each with rates_val.h5 and rates_test.h5 of mc_maze's registry shapes (val
phase: 1721 train / 574 eval trials; test phase: 2295 / 574; 140 bins; 137 held-in / 45 held-out
neurons; 40 forward bins). Disk: one checkpoint's two files are ~0.56 GB, so 100 distinct ones would
be 56 GB; instead ``--distinct`` different rate files (default 10, ~5.6 GB) are hard-linked into the
100 folders. The ranking still reads 100 files and the ensemble mean reads every member's files,
so the work is the same as for 100 distinct checkpoints, but the page cache is warmer than it would
be with 56 GB of files: read this figure as compute plus cached reads, not cold-disk reads.

Timed: the whole of build_ensemble.build_ensemble (rank the 100 checkpoints, read the held-out val
rates of the library, the top ``--max-models`` (default 50, as build_ensemble.py), top-N curve,
greedy with 5-fold CV over val trials) and write_ensemble (val and test ensemble means of the chosen
members, the submission, the plot, ensemble.json), without the nlb_tools val metrics (their cost is
nlb_tools' ridge decoders, not the ensemble). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlbpipe import ensemble as ens  # noqa: E402
from nlbpipe.datasets import resolve  # noqa: E402
from nlbpipe.rates import save_rates  # noqa: E402
from nlbpipe.scoring import co_bps  # noqa: E402


def write_experiment(root: Path, n_ckpts: int, n_distinct: int, seed: int = 0):
    info, _ = resolve("mc_maze")
    n_in, n_out, bins, fw = info.n_heldin, info.n_heldout, 140, 40
    rng = np.random.default_rng(seed)
    W = rng.normal(0, 0.5, (4, n_in + n_out)).astype(np.float32)
    b = rng.normal(-3.0, 0.4, n_in + n_out).astype(np.float32)  # ~0.05 spikes per 5 ms bin

    def truth(n):
        t = np.arange(bins + fw, dtype=np.float32)[None, :, None] / 20.0
        z = np.sin(t * np.arange(1, 5, dtype=np.float32) + rng.uniform(0, 6.3, (n, 1, 4)).astype(np.float32))
        return np.exp(z @ W + b)

    phases = {"val": (truth(info.n_train), truth(info.n_val)), "test": (truth(info.n_train + info.n_val), truth(info.n_test))}
    spikes = rng.poisson(phases["val"][1][:, :bins, n_in:]).astype(np.float64)
    shared = {ph: (rng.normal(0, 0.15, a.shape).astype(np.float32), rng.normal(0, 0.15, e.shape).astype(np.float32))
              for ph, (a, e) in phases.items()}
    sources, scores = [], []
    for k in range(n_distinct):
        sigma = np.float32(0.25 + 0.03 * k)
        folder = root / "distinct" / f"m{k}"
        folder.mkdir(parents=True)
        for ph, (tr, ev) in phases.items():
            def noisy(x, s):
                return x * np.exp(s + sigma * rng.standard_normal(x.shape, dtype=np.float32))
            rt, re = noisy(tr, shared[ph][0]), noisy(ev, shared[ph][1])
            rates = {"train_rates_heldin": rt[:, :bins, :n_in], "train_rates_heldout": rt[:, :bins, n_in:],
                     "eval_rates_heldin": re[:, :bins, :n_in], "eval_rates_heldout": re[:, :bins, n_in:],
                     "eval_rates_heldin_forward": re[:, bins:, :n_in], "eval_rates_heldout_forward": re[:, bins:, n_in:]}
            save_rates(folder / f"rates_{ph}.h5", rates, phase=ph)
            if ph == "val":
                scores.append(co_bps(rates["eval_rates_heldout"], spikes))
        sources.append(folder)
        print(f"wrote distinct model {k + 1}/{n_distinct}", file=sys.stderr, flush=True)
    exp = root / "results" / "mc_maze" / "bench"
    rows = []
    for i in range(n_ckpts):
        k = i % n_distinct
        rel = f"trial_{i:03d}/run/checkpoints/best_co_bps"
        (exp / rel).mkdir(parents=True)
        for name in ("rates_val.h5", "rates_test.h5"):
            try:
                os.link(sources[k] / name, exp / rel / name)
            except OSError:
                shutil.copy(sources[k] / name, exp / rel / name)
        rows.append(f"{i:03d},best_co_bps,{rel},{scores[k] - 1e-6 * i}")
    rows.sort(key=lambda r: -float(r.rsplit(",", 1)[1]))
    (exp / "checkpoints.csv").write_text("trial_id,kind,checkpoint_dir,val_co_bps\n" + "\n".join(rows) + "\n")
    np.save(root / "val_spikes_heldout.npy", spikes)
    return exp, spikes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", type=int, default=100)
    p.add_argument("--distinct", type=int, default=10)
    p.add_argument("--method", default="both", choices=ens.METHODS)
    p.add_argument("--size", default="auto")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--tmp", help="folder for the temporary experiment (default: system temp)")
    p.add_argument("--max-models", type=int, default=50, help="library size, as build_ensemble.py's default (50)")
    p.add_argument("--keep", action="store_true", help="keep the temporary experiment (for --reuse)")
    p.add_argument("--reuse", help="a folder kept by --keep: skip writing the experiment")
    args = p.parse_args()
    size = args.size if args.size == "auto" else int(args.size)
    root = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="ensemble_speed_", dir=args.tmp))
    keep = args.keep or bool(args.reuse)
    try:
        t0 = time.perf_counter()
        if args.reuse:
            exp, spikes = root / "results" / "mc_maze" / "bench", np.load(root / "val_spikes_heldout.npy")
            args.checkpoints = len((exp / "checkpoints.csv").read_text().splitlines()) - 1
        else:
            exp, spikes = write_experiment(root, args.checkpoints, args.distinct)
        t_setup = time.perf_counter() - t0

        t0 = time.perf_counter()
        c0 = time.process_time()
        result = ens.build_ensemble(exp, spikes, method=args.method, size=size, max_models=args.max_models,
                                    folds=args.folds, log=lambda m: print(m, file=sys.stderr))
        t_select = time.perf_counter() - t0
        t0 = time.perf_counter()
        ens.write_ensemble(result, exp, "mc_maze", root / "submission")
        t_write = time.perf_counter() - t0
        total = t_select + t_write
        cpu = time.process_time() - c0
        for line in ens.summary_lines(result):
            print(line)
        print(f"setup (not timed): {t_setup:.1f} s")
        print(f"read + rank + select ({args.checkpoints} checkpoints, library {min(args.max_models, args.checkpoints)}, "
              f"method {args.method}, {args.folds}-fold CV): {t_select:.2f} s")
        print(f"write ({len(result.chosen.indices)} member(s): val+test means, submission, plot, json): {t_write:.2f} s")
        print(f"total: {total:.2f} s wall, {cpu:.2f} s CPU (target < 30 s); load average now {os.getloadavg()[0]:.1f}")
        print(json.dumps({
            "benchmark": "ensemble_speed", "checkpoints": args.checkpoints, "distinct_rate_files": args.distinct,
            "max_models": args.max_models, "method": args.method, "chosen": result.chosen.method,
            "members": len(result.chosen.indices), "cpu_s": round(cpu, 3), "load_avg": round(os.getloadavg()[0], 2),
            "select_s": round(t_select, 3), "write_s": round(t_write, 3), "total_s": round(total, 3),
            "target_s": 30, "ok": total < 30, "cpus": os.cpu_count(), "machine": platform.machine(),
        }))
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
