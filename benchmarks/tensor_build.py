#!/usr/bin/env python
"""Wall time and peak RSS of building one dataset's tensors and val targets (cold cache).

    python benchmarks/tensor_build.py DATASET [--scale F] [--reference auto|yes|no] [--root DIR]

Writes (or reuses) the synthetic stand-in of DATASET at ``--scale`` (NWB files only) under
``--root`` (default NLB_SYNTHETIC_RAW), then times, each in a fresh subprocess so that its peak RSS
is its own: ``load_tensors(key, "val")``, ``load_tensors(key, "test")`` and
``load_eval_targets(key, "val")`` (with PSTHs), each with an empty cache. With ``--reference``
(``auto``: at scales up to 0.3, where nlb_tools fits in memory here) the same three through
nlb_tools' own path (``nlbpipe.tensors.reference_build``) and the largest difference between the
two builds' arrays (absolute, and relative to each array's largest value). Targets (issue 11):
full-size mc_maze under 2 min and 4 GB each. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CALLS = {  # name -> (phase, targets?)
    "val_tensors": ("val", False),
    "test_tensors": ("test", False),
    "val_targets": ("val", True),
}

CHILD = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
from nlbpipe.tensors import load_eval_targets, load_tensors, reference_build
from nlb_tools.make_tensors import save_to_h5
key, phase, targets, path, raw, cache, reference = {args!r}
t0 = time.perf_counter()
if reference:
    tens, targ = reference_build(key, phase, raw, with_psth=targets)
    out = {{"targets": targ}} if targets else {{"tensors": tens}}
elif targets:
    out = {{"targets": load_eval_targets(key, phase, raw, cache)}}
else:
    out = {{"tensors": load_tensors(key, phase, raw, cache)}}
wall = time.perf_counter() - t0
# VmHWM, not ru_maxrss: ru_maxrss survives exec and would report the forking parent's peak
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 2**20
save_to_h5(out, path, overwrite=True)
print(json.dumps({{"wall_s": wall, "peak_rss_gb": peak}}))
"""


def run_call(key, phase, targets, out_path, raw, cache, reference) -> dict:
    args = (key, phase, targets, str(out_path), str(raw), str(cache), reference)
    proc = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), args=args)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1], "returncode": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _leaves(path: Path) -> dict:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def max_difference(a_path: Path, b_path: Path) -> dict:
    """Largest |a - b| over all arrays, and largest relative to the array's scale; NaN mismatches."""
    a, b = _leaves(a_path), _leaves(b_path)
    worst_abs = worst_rel = 0.0
    nan_mismatch, missing = 0, sorted(set(a) ^ set(b))
    for k in set(a) & set(b):
        x, y = a[k], b[k]
        if x.dtype == object or y.dtype == object:
            same = len(x) == len(y) and all(np.array_equal(p, q) for p, q in zip(x, y))
            worst_abs = worst_abs if same else float("inf")
            continue
        if x.shape != y.shape:
            missing.append(f"{k} (shape {x.shape} vs {y.shape})")
            continue
        x, y = x.astype(np.float64), y.astype(np.float64)
        nan_mismatch += int((np.isnan(x) != np.isnan(y)).sum())
        d = np.abs(np.where(np.isnan(x) | np.isnan(y), 0.0, x - y))
        if d.size:
            scale = np.nanmax(np.abs(y)) if np.isfinite(y).any() else 0.0
            worst_abs = max(worst_abs, float(d.max()))
            worst_rel = max(worst_rel, float(d.max() / scale) if scale else 0.0)
    return {"max_abs": worst_abs, "max_rel": worst_rel, "nan_mismatch": nan_mismatch, "mismatched": missing}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", choices=["auto", "yes", "no"], default="auto")
    ap.add_argument("--root", type=Path, default=None, help="stand-in root (default NLB_SYNTHETIC_RAW)")
    args = ap.parse_args(argv)

    from nlbpipe.datasets import resolve
    from nlbpipe.settings import get_settings
    from nlbpipe.synthetic import write_synthetic

    info, _ = resolve(args.dataset)
    root = (args.root or get_settings().synthetic_raw).expanduser().absolute()
    import time

    t0 = time.perf_counter()
    write_synthetic(info.name, root, seed=args.seed, scale=args.scale, targets=False)
    print(f"stand-in {info.name} scale {args.scale} under {root} ({time.perf_counter() - t0:.0f} s)")
    with_ref = args.reference == "yes" or (args.reference == "auto" and args.scale <= 0.3)
    result = {"dataset": args.dataset, "scale": args.scale, "cpu_count": os.cpu_count(), "windowed": {},
              "nlb_tools": {}, "difference": {}}
    with tempfile.TemporaryDirectory(prefix="nlbpipe-tensor-build-") as tmp:
        tmp = Path(tmp)
        for name, (phase, targets) in CALLS.items():
            paths = {}
            for label, ref in (("windowed", False), ("nlb_tools", True)):
                if ref and not with_ref:
                    continue
                paths[label] = tmp / f"{label}_{name}.h5"
                got = run_call(args.dataset, phase, targets, paths[label], root, tmp / f"cache_{label}_{name}", ref)
                result[label][name] = got
                shown = (f"{got['wall_s']:7.1f} s  {got['peak_rss_gb']:6.2f} GB" if "error" not in got
                         else f"failed: {got['error']}")
                print(f"{label:9s} {name:13s} {shown}", flush=True)
            if len(paths) == 2 and all(p.is_file() for p in paths.values()):
                diff = max_difference(paths["windowed"], paths["nlb_tools"])
                result["difference"][name] = diff
                print(f"{'':9s} {name:13s} max |diff| {diff['max_abs']:.3g} (relative {diff['max_rel']:.3g}), "
                      f"NaN mismatches {diff['nan_mismatch']}, mismatched {diff['mismatched'] or 'none'}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
