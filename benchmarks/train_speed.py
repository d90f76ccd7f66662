"""Training speed of one NDT run on mc_maze_small-shaped data: what every search trial pays.

Runs ``nlbpipe.ndt.train.train`` itself (validation, checkpoints and resume state included) with the
mc_maze_small template model (4 layers, identity embedding, pre-norm, T-Fixup, learned positions,
full context, batch 64) on Poisson data shaped like mc_maze_small (75 train / 25 val trials,
140 + 40 bins, 107 + 35 neurons) for a fixed number of updates, and prints train trials/s,
optimizer steps/s and peak RSS; the last line is one JSON object.

    .venv/bin/python benchmarks/train_speed.py [--updates 200] [--device cpu|cuda] [--threads N]

Target on a 2-core CPU: >= 68 train trials/s, <= 700 MiB peak RSS (the 2021 code: ~45 trials/s, 1.4 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from nlbpipe.config import apply_overrides, config_from_dict
from nlbpipe.ndt.train import train

TEMPLATES = Path(__file__).resolve().parents[1] / "nlbpipe" / "templates"


def mc_maze_small_like(seed: int = 0, n_train: int = 75, n_val: int = 25, bins: int = 140, fwd: int = 40,
                       heldin: int = 107, heldout: int = 35) -> dict:
    """Poisson counts from smooth low-dimensional rates, in nlb_tools' val-phase tensor layout."""
    rng = np.random.default_rng(seed)
    n, L, N = n_train + n_val, bins + fwd, heldin + heldout
    t = np.arange(L) / L
    latents = np.stack([np.sin(2 * np.pi * (f * t[None] + rng.uniform(size=(n, 1)))) for f in (1, 2, 3)], -1)
    rates = np.exp(-2.0 + 0.7 * latents @ rng.normal(size=(3, N)))  # ~0.15 spikes per 5 ms bin
    spikes = rng.poisson(rates).astype(np.float32)
    out = {}
    for prefix, trials in (("train", slice(0, n_train)), ("eval", slice(n_train, n))):
        s = spikes[trials]
        out[f"{prefix}_spikes_heldin"] = s[:, :bins, :heldin]
        out[f"{prefix}_spikes_heldout"] = s[:, :bins, heldin:]
        out[f"{prefix}_spikes_heldin_forward"] = s[:, bins:, :heldin]
        out[f"{prefix}_spikes_heldout_forward"] = s[:, bins:, heldin:]
    return out


def template_config():
    """nlbpipe/templates/base.yaml + mc_maze_small.yaml (the model a search starts from)."""
    merged: dict = {}
    for name in ("base.yaml", "mc_maze_small.yaml"):
        path = TEMPLATES / name
        if path.is_file():
            for section, values in (yaml.safe_load(path.read_text()) or {}).items():
                merged.setdefault(section, {}).update(values or {})
    merged.setdefault("data", {})["dataset"] = "mc_maze_small"
    cfg = config_from_dict(merged, source=str(TEMPLATES))
    m = cfg.model  # the shape this benchmark promises
    assert (m.num_layers, m.embedding, m.pre_norm, m.fixup_init, m.position) == (4, "identity", True, True, "learned"), m
    return cfg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=200, help="optimizer updates to time (default 200)")
    parser.add_argument("--val-interval", type=int, default=20, help="updates between validations (template: 20)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    args = parser.parse_args()

    tensors = mc_maze_small_like()
    cfg = apply_overrides(template_config(), {
        "train.batch_size": 64, "train.max_updates": args.updates, "train.val_interval": args.val_interval,
        "train.patience": -1, "train.device": args.device, "train.num_threads": args.threads, "train.bf16": args.bf16,
    }, source="benchmarks/train_speed.py")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ndt_bench_") as run_dir:
        t0, c0 = time.perf_counter(), time.process_time()
        result = train(cfg, run_dir, tensors=tensors)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n_train = tensors["train_spikes_heldin"].shape[0]
    # batches walk shuffled passes over the 75 train trials: 64, then the short batch of 11
    B = cfg.train.batch_size
    per_pass = -(-n_train // B)
    trials_seen = sum(min(B, n_train - (i % per_pass) * B) for i in range(result.step))
    device = "cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    figures = {
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "updates": result.step,
        "wall_s": round(wall, 2),
        "train_trials_per_s": round(trials_seen / wall, 1),
        "optimizer_steps_per_s": round(result.step / wall, 2),
        # on a shared machine wall time measures the neighbours too; CPU seconds (all threads) do not
        "cpu_s": round(cpu, 2),
        "train_trials_per_cpu_s": round(trials_seen / cpu, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg_before": round(load_before, 2),
        "load_avg_after": round(os.getloadavg()[0], 2),
        "val_co_bps_best": round(result.best.get("val_co_bps", float("nan")), 4),
        "dropout": cfg.model.dropout,
        "bf16": cfg.train.bf16,
    }
    if device == "cuda":
        figures["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(f"device            {figures['device']}")
    print(f"train trials/s    {figures['train_trials_per_s']}  ({trials_seen} trials in {wall:.1f} s, validation incl.)")
    print(f"optimizer steps/s {figures['optimizer_steps_per_s']}")
    print(f"CPU time          {figures['cpu_s']} s over all threads ({figures['train_trials_per_cpu_s']} trials per CPU-second)")
    print(f"peak RSS          {figures['peak_rss_mib']} MiB" +
          (f"; peak GPU {figures['peak_gpu_mib']} MiB" if device == "cuda" else ""))
    print(f"load average      {figures['load_avg_before']} before, {figures['load_avg_after']} after")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
