"""nlbpipe's NDT beside the 2021 NDT code at one configuration, on several seeds of the stand-in.

A measurement only: the original (github.com/snel-repo/neural-data-transformers) runs, unmodified,
from a checkout you name with --ndt-repo; none of its code is in nlbpipe. Per seed, on the realistic
stand-in of ``--dataset`` (written as benchmarks/quality.py writes it), both train the same
configuration for the same number of passes over the training trials, at the same time, one CPU
thread each: the 2021 NDT's mc_maze_small config (4 layers, pre-norm, T-Fixup, learned positions,
identity embedding, dropout 0.1 / 0.2 before the read-out / 0.2 on the input, context -8/+4 bins,
mask ratio 0.25 with every masked bin zeroed, AdamW lr 1e-3, weight decay 5e-5, batch 64, linear
warm-up then cosine decay over the budget, no early stopping) and nlbpipe with the same values
started as the 2021 code and the templates start (``model.init: ndt2021``, ``model.readout_bias:
zero``; ``--set model.init=nlbpipe --set model.readout_bias=mean_rate`` runs nlbpipe's own start). Every ``--interval`` passes the original saves a checkpoint and nlbpipe validates; each original
checkpoint's val rates come from its own ``Runner.get_rates``, and both are scored by nlb_tools'
``bits_per_spike`` on the same val trials. Prints per seed and on average the best val co-bps, the
pass it came at, and passes per second of wall time (start-up and writing included); the last
line is one JSON object.

    .venv/bin/python benchmarks/original_ndt.py --ndt-repo ~/neural-data-transformers \\
        [--ndt-python PYTHON] [--seeds 0 1 2] [--passes 1000] [--warmup 40] [--interval 20] [--work DIR]
        [--set key=value ...]   # more nlbpipe settings, e.g. model.init=nlbpipe

The original needs yacs, pytorch_transformers (1.2, installed without its dependencies) and
tensorboard importable by ``--ndt-python`` (default: this interpreter; extra folders go on
PYTHONPATH); under torch >= 2.6 its ``torch.load`` needs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which
this sets for it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import prepare_standin  # noqa: E402

from nlbpipe.config import load_config  # noqa: E402
from nlbpipe.tensors import load_tensors  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# The configuration in nlbpipe's keys; the original gets it from its mc_maze_small config
# and its defaults (src/config/default.py), written out in original_config().
NLBPIPE_SETTINGS = {
    "model.num_layers": 4, "model.hidden_size": 128, "model.num_heads": 2, "model.activation": "relu",
    "model.dropout": 0.1, "model.dropout_rates": 0.2, "model.dropout_embedding": 0.2,
    "model.context_backward": 8, "model.context_forward": 4, "model.embedding": "identity",
    "model.position": "learned", "model.pre_norm": "true", "model.fixup_init": "true", "model.scale_norm": "false",
    "model.log_rate": "true", "model.factor_dim": 0, "model.input_smooth_ms": 0,
    "model.init": "ndt2021", "model.readout_bias": "zero",  # the templates' start, the 2021 code's
    "train.lr": 1e-3, "train.weight_decay": 5e-5, "train.batch_size": 64, "train.lr_schedule": "cosine",
    "train.grad_clip": 200, "train.mask_ratio": 0.25, "train.mask_mode": "timestep", "train.mask_token_ratio": 1.0,
    "train.mask_random_ratio": 0.5, "train.mask_max_span": 1, "train.patience_passes": -1,
    "train.early_stop": "co_bps", "train.num_threads": 1, "train.micro_batch_size": 0,
}

# Run by --ndt-python inside the original's checkout: every checkpoint's val rates through its own
# Runner.get_rates, scored with nlb_tools; prints one JSON object {checkpoint: [pass, co_bps]}.
SCORE_ORIGINAL = textwrap.dedent("""
    import glob, json, os, sys
    import h5py, numpy as np, torch
    from nlb_tools.evaluation import bits_per_spike
    sys.path.insert(0, os.getcwd())
    from src.dataset import DATASET_MODES
    from src.runner import Runner
    ckpt_dir, data_file = sys.argv[1:3]
    with h5py.File(data_file, "r") as f:
        heldout = f["eval_spikes_heldout"][()].astype(np.float64)
        n_heldin, n_bins = f["eval_spikes_heldin"].shape[2], f["eval_spikes_heldin"].shape[1]
    ckpts = sorted(glob.glob(os.path.join(ckpt_dir, "*.pth")))
    runner = Runner(checkpoint_path=ckpts[0])
    torch.set_grad_enabled(False)
    out = {}
    for ck in ckpts:
        rates, _ = runner.get_rates(checkpoint_path=ck, mode=DATASET_MODES.val)
        # the original's own checkpoint, just written by this run: it pickles its yacs config
        update = int(torch.load(ck, map_location="cpu", weights_only=False)["extra_state"]["update"])
        r = rates[:, :n_bins, n_heldin:].cpu().numpy().astype(np.float64)
        out[os.path.basename(ck)] = [update, float(bits_per_spike(r, heldout))]
    print(json.dumps(out))
""")


def original_config(run_dir: Path, data_file: Path, seed: int, passes: int, warmup: int, interval: int) -> Path:
    """The 2021 NDT's mc_maze_small.yaml with this run's paths, budget and checkpoint interval."""
    text = f"""\
SEED: {seed}
CHECKPOINT_DIR: "{run_dir}/ckpts/"
TENSORBOARD_DIR: "{run_dir}/tb/"
LOG_DIR: "{run_dir}/logs/"
DATA:
  DATAPATH: "{data_file.parent}/"
  TRAIN_FILENAME: "{data_file.name}"
  VAL_FILENAME: "{data_file.name}"
MODEL:
  TRIAL_LENGTH: 0
  LEARNABLE_POSITION: True
  PRE_NORM: True
  FIXUP_INIT: True
  EMBED_DIM: 0
  LOGRATE: True
  NUM_LAYERS: 4
TRAIN:
  LR:
    WARMUP: {warmup}
  MASK_RATIO: 0.25
  WEIGHT_DECAY: 5.0e-05
  PATIENCE: {10 * passes}
  LOG_INTERVAL: {interval * 5}
  VAL_INTERVAL: {interval}
  CHECKPOINT_INTERVAL: {interval}
  NUM_UPDATES: {passes}
"""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "original.yaml"  # the variant name (its checkpoints' prefix) is the file's stem
    path.write_text(text)
    return path


def nlbpipe_best(run_dir: Path, data_file: Path) -> tuple[int, float]:
    """The pass and val co-bps (nlb_tools) of nlbpipe's best-co-bps checkpoint."""
    from nlb_tools.evaluation import bits_per_spike

    ckpt = run_dir / "checkpoints" / "best_co_bps"
    with h5py.File(ckpt / "rates_val.h5", "r") as f, h5py.File(data_file, "r") as d:
        score = float(bits_per_spike(f["eval_rates_heldout"][()].astype(np.float64),
                                     d["eval_spikes_heldout"][()].astype(np.float64)))
    return int(json.loads((ckpt / "metrics.json").read_text())["pass"]), score


def run_seed(args, seed: int) -> dict:
    config = prepare_standin(args.dataset, seed, 1.0, args.work)
    data = load_config(config).data
    load_tensors(args.dataset, "val", raw_dir=Path(data.raw_dir), cache_dir=Path(data.cache_dir))  # both read this cache
    data_file = Path(data.cache_dir) / f"{args.dataset}_val.h5"
    out = args.work / f"seed{seed}" / "original_ndt" / args.name
    orig_dir, ours_dir = out / "original", out / "nlbpipe"
    orig_cfg = original_config(orig_dir, data_file, seed, args.passes, args.warmup, args.interval)
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    orig_env = {**one_thread, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    sets = {**NLBPIPE_SETTINGS, "train.seed": seed, "train.max_passes": args.passes,
            "train.warmup_passes": args.warmup, "train.val_interval_passes": args.interval}
    sets.update(kv.split("=", 1) for kv in args.set)
    ours_cmd = [sys.executable, "-m", "nlbpipe.train", str(config), "--run-dir", str(ours_dir)]
    for k, v in sets.items():
        ours_cmd += ["--set", f"{k}={v}"]
    orig_cmd = [args.ndt_python, "-m", "src.run", "--run-type", "train", "--exp-config", str(orig_cfg)]
    print(f"seed {seed}: both training {args.passes} passes, one thread each ({out})", flush=True)
    t0 = time.perf_counter()
    with (orig_dir / "train.log").open("w") as olog, (out / "nlbpipe_train.log").open("w") as nlog:
        procs = {"original": subprocess.Popen(orig_cmd, cwd=args.ndt_repo, env=orig_env, stdout=olog, stderr=subprocess.STDOUT),
                 "nlbpipe": subprocess.Popen(ours_cmd, cwd=REPO, env=one_thread, stdout=nlog, stderr=subprocess.STDOUT)}
        walls = {}
        while procs:
            for name, proc in list(procs.items()):
                if proc.poll() is not None:
                    walls[name] = time.perf_counter() - t0
                    if proc.returncode:
                        raise SystemExit(f"error: the {name} run of seed {seed} exited {proc.returncode}; see "
                                         f"{orig_dir / 'train.log' if name == 'original' else out / 'nlbpipe_train.log'}")
                    del procs[name]
            time.sleep(2)
    scored = subprocess.run([args.ndt_python, "-c", SCORE_ORIGINAL, str(orig_dir / "ckpts" / "original"), str(data_file)],
                            cwd=args.ndt_repo, env=orig_env, capture_output=True, text=True)
    if scored.returncode:
        raise SystemExit(f"error: scoring the original's checkpoints failed:\n{scored.stderr[-2000:]}")
    orig_scores = json.loads(scored.stdout.strip().splitlines()[-1])
    (out / "original_scores.json").write_text(json.dumps(orig_scores, indent=1))
    orig_pass, orig_best = max(orig_scores.values(), key=lambda v: v[1])
    ours_pass, ours_best = nlbpipe_best(ours_dir, data_file)
    return {"seed": seed, "original": {"best_val_co_bps": orig_best, "pass": orig_pass, "wall_s": round(walls["original"], 1),
                                       "passes_per_s": round(args.passes / walls["original"], 2)},
            "nlbpipe": {"best_val_co_bps": ours_best, "pass": ours_pass, "wall_s": round(walls["nlbpipe"], 1),
                        "passes_per_s": round(args.passes / walls["nlbpipe"], 2)}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ndt-repo", type=Path, required=True, help="a checkout of snel-repo/neural-data-transformers")
    p.add_argument("--ndt-python", default=sys.executable, help="the interpreter that runs the original (default: this one)")
    p.add_argument("--dataset", default="mc_maze_small_20", help="dataset key (default mc_maze_small_20)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="stand-in and training seeds")
    p.add_argument("--passes", type=int, default=1000, help="passes over the training trials, both (default 1000)")
    p.add_argument("--warmup", type=int, default=40, help="warm-up passes, both (default 40: 2021's 2000 of 50501)")
    p.add_argument("--interval", type=int, default=20, help="passes between checkpoints / validations (default 20)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more nlbpipe settings")
    p.add_argument("--work", type=Path, default=None, help="folder for the stand-ins and runs (default: a new temporary one)")
    p.add_argument("--name", default="default", help="name of this comparison's runs inside --work (default 'default')")
    args = p.parse_args()
    if not (args.ndt_repo / "src" / "runner.py").is_file():
        p.error(f"--ndt-repo {args.ndt_repo}: no src/runner.py; expected a checkout of snel-repo/neural-data-transformers")
    bad = [kv for kv in args.set if "=" not in kv]
    if bad:
        p.error(f"--set {bad[0]}: expected KEY=VALUE")
    args.ndt_repo = args.ndt_repo.resolve()
    args.work = (args.work or Path(tempfile.mkdtemp(prefix="nlbpipe_vs_ndt_"))).resolve()
    results = [run_seed(args, seed) for seed in args.seeds]
    print(f"\n{'seed':>5}{'original':>12}{'at pass':>9}{'passes/s':>10}{'nlbpipe':>12}{'at pass':>9}{'passes/s':>10}")
    for r in results:
        o, n = r["original"], r["nlbpipe"]
        print(f"{r['seed']:>5}{o['best_val_co_bps']:>12.4f}{o['pass']:>9}{o['passes_per_s']:>10.2f}"
              f"{n['best_val_co_bps']:>12.4f}{n['pass']:>9}{n['passes_per_s']:>10.2f}")
    mean = {side: sum(r[side]["best_val_co_bps"] for r in results) / len(results) for side in ("original", "nlbpipe")}
    print(f"{'mean':>5}{mean['original']:>12.4f}{'':>19}{mean['nlbpipe']:>12.4f}")
    print(json.dumps({"benchmark": "original_ndt", "dataset": args.dataset, "passes": args.passes, "warmup": args.warmup,
                      "interval": args.interval, "sets": args.set, "seeds": results, "mean": mean}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
