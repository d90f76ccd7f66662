"""The whole pipeline on a synthetic mc_maze_small, on CPU, with nothing to download.

``make demo`` (or ``python -m nlbpipe.demo``) runs the same scripts a user runs on real data,
printing each command first, then scores everything against the synthetic ground truth:

    download_data.py --synthetic → generate_configs.py → run_hyperopt.py → build_ensemble.py
    → validate_submission.py (format, recompute, score) → one table of val and test metrics

``NLB_HOME`` decides where it writes. A rerun reuses what is done: the synthetic files are kept,
a finished search is only re-ranked, an interrupted one is resumed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import contracts
from .cli import run_reporting_errors
from .settings import get_settings

REPO = Path(__file__).resolve().parent.parent
SOURCE = "mc_maze_small"  # the NWB files written
# 20 ms bins: the same spikes in a quarter of the tokens, so an NDT learns in a CPU minute what
# takes it an hour at 5 ms; an official NLB key, scored against the 20 ms smoothing baseline.
DATASET = "mc_maze_small_20"
EXPERIMENT = "demo"


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is. ``full`` fits in 10 minutes on 2 CPU cores; ``tiny`` is the CI test."""

    scale: float  # share of mc_maze_small's trials the synthetic stand-in writes
    samples: int  # trials of the Bayesian search
    concurrent: int
    max_passes: int  # passes over the training trials per NDT
    val_interval_passes: int
    initial_points: int
    max_models: int
    # The recipe, chosen by measurement on three seeds of the realistic stand-in (README, "The demo"):
    # with the read-out started at the mean rates a short run overfits, so heavy dropout (most before
    # the read-out), a learning rate high enough for 250 passes, few masked bins; trials that stall stop early.
    dropout: tuple[float, float] = (0.35, 0.5)  # the searched range of model.dropout and dropout_embedding
    dropout_rates: tuple[float, float] = (0.55, 0.8)  # of model.dropout_rates (before the read-out)
    lr: tuple[float, float] = (8e-3, 2.5e-2)  # the searched (log-uniform) learning-rate range
    mask_ratio: tuple[float, float] = (0.1, 0.25)  # uniform; share of time bins masked
    mask_token_ratio: tuple[float, float] = (0.25, 0.75)  # log-uniform; masked bins zeroed (rest random or kept)
    input_smooth_ms: tuple[float, float] = (10.0, 25.0)  # uniform; model.input_smooth_ms (the 2021 NDT: 0)
    early_stop: str = "co_bps"  # train.early_stop
    patience_passes: int = 60


SIZES = {
    "full": DemoSize(scale=1.0, samples=20, concurrent=2, max_passes=250, val_interval_passes=10, initial_points=8,
                     max_models=60),
    "tiny": DemoSize(scale=0.2, samples=4, concurrent=2, max_passes=60, val_interval_passes=20, initial_points=2,
                     max_models=12),
}

# Small, fast models for a CPU demo: fixed settings, on top of the generated config. At the demo's
# learning rates (8e-3-2.5e-2) nlbpipe's initialisation and a read-out started at the mean rates learn
# where the 2021 ones (the templates') collapse (README, "The model and its training").
DEMO_SETTINGS = {"model.num_layers": 2, "model.init": "nlbpipe", "model.readout_bias": "mean_rate",
                 "train.mask_span_ramp_start_passes": 0, "train.mask_span_ramp_end_passes": 0}


def _step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def _run(script: str, *args: str, ok_codes=(0,)) -> int:
    cmd = [sys.executable, str(REPO / script), *args]
    print("$ " + " ".join(shlex.quote(c) for c in [f"python {script}", *args]), flush=True)
    code = subprocess.call(cmd, cwd=REPO)
    if code not in ok_codes:
        raise SystemExit(f"error: {script} exited with {code}; rerun `make demo` to continue where it stopped")
    return code


def write_demo_config(config: Path, out_dir: Path, size: DemoSize) -> Path:
    """The generated config and search space, cut to the demo's budget.

    The template's ranges assume the 2021 budget (up to 50k passes); at a few hundred passes a
    different corner of them learns, so these are replaced, each by the ``size`` field of that name:
    warm-up (0-2000 passes) by an eighth to a quarter of the budget; the learning rate by ``lr`` (a
    run at 1e-5 learns nothing in 250 passes, one at 2.5e-2 needs that warm-up); dropout by
    ``dropout`` and ``dropout_rates``; the masking by ``mask_ratio`` and ``mask_token_ratio``; and the
    held-in counts are smoothed over ``input_smooth_ms`` (not searched by the template).
    Trials stop after ``size.patience_passes`` passes without a better ``size.early_stop``.
    Everything else searched (context, span, random-token share, weight decay) keeps the template's range.
    """
    import yaml

    from .config import apply_overrides, load_config, save_config
    from .fileio import write_text_atomic
    from .search_space import search_space_path

    fixed = {**DEMO_SETTINGS, "train.max_passes": size.max_passes, "train.val_interval_passes": size.val_interval_passes,
             "train.patience_passes": size.patience_passes, "train.early_stop": size.early_stop}
    cfg = apply_overrides(load_config(config), fixed, source="nlbpipe.demo")
    space = yaml.safe_load(search_space_path(config).read_text())
    for key in fixed:
        space.pop(key, None)
    replaced = {
        "train.warmup_passes": ("randint", (size.max_passes // 8, size.max_passes // 4 + 1)),
        "train.lr": ("loguniform", size.lr),
        "model.dropout": ("uniform", size.dropout),
        "model.dropout_embedding": ("uniform", size.dropout),
        "model.dropout_rates": ("uniform", size.dropout_rates),
        "train.mask_ratio": ("uniform", size.mask_ratio),
        "train.mask_token_ratio": ("loguniform", size.mask_token_ratio),
    }
    if size.input_smooth_ms[1] > 0:  # (0, 0): raw counts, as the template
        replaced["model.input_smooth_ms"] = ("uniform", size.input_smooth_ms)
    for key, (sample_fn, (low, high)) in replaced.items():
        space[key] = {"sample_fn": sample_fn, "low": low, "high": high}
    demo_config = out_dir / config.name
    save_config(cfg, demo_config)
    write_text_atomic(search_space_path(demo_config), yaml.safe_dump(space, sort_keys=True))
    print(f"demo config: {demo_config} (+ {search_space_path(demo_config).name})")
    return demo_config


def _check_same_size(root: Path, size: DemoSize) -> None:
    """A rerun continues the demo under NLB_HOME; another size there would mix two demos' files."""
    from .errors import NlbpipeError
    from .synthetic import written_standin

    present = written_standin(SOURCE, root)
    if present and float(present.get("scale", -1)) != float(size.scale):
        raise NlbpipeError(
            f"{root} holds the demo's stand-in at scale {present.get('scale')}, this size needs scale {size.scale}: "
            "run it under another NLB_HOME (e.g. NLB_HOME=~/nlb_demo_tiny), or delete that NLB_HOME to start over")


def run_pipeline(size: DemoSize) -> dict[str, Path]:
    settings = get_settings()
    exp_dir = settings.results_dir / DATASET / EXPERIMENT
    out_dir = settings.submissions_dir / DATASET / EXPERIMENT

    _check_same_size(settings.synthetic_raw, size)
    _step(f"1/5 synthetic {SOURCE} (scale {size.scale}) in {settings.synthetic_raw}")
    _run("download_data.py", "--synthetic", SOURCE, "--scale", str(size.scale), "--seed", "0")

    _step("2/5 run config and search space")
    config = settings.config_dir / f"{DATASET}.yaml"
    if config.exists():
        print(f"using {config} (delete it to regenerate)")
    else:
        _run("generate_configs.py", DATASET, "--synthetic")
    demo_config = write_demo_config(config, settings.home / "demo" / "configs", size)

    _step(f"3/5 Bayesian search: {size.samples} NDTs, {size.concurrent} at a time, {size.max_passes} passes each")
    search_args = [DATASET, "--name", EXPERIMENT, "--num-cpus", str(size.concurrent)]
    if (exp_dir / contracts.SEARCH_SETUP_JSON).exists():
        _run("run_hyperopt.py", *search_args, "--resume")
    else:
        _run("run_hyperopt.py", *search_args, "--config", str(demo_config), "--samples", str(size.samples),
             "--max-concurrent", str(size.concurrent), "--cpus-per-trial", "1",
             "--n-initial-points", str(size.initial_points), "--seed", "0")

    _step("4/5 ensemble by val co-bps (top-N and greedy)")
    _run("build_ensemble.py", DATASET, "--experiment", str(exp_dir), "--out", str(out_dir),
         "--max-models", str(size.max_models))

    from .synthetic import synthetic_files

    submission = out_dir / contracts.submission_filename(DATASET)
    if not submission.exists():
        submission = next(out_dir.glob("*submission*.h5"))
    test_targets = synthetic_files(SOURCE, settings.synthetic_raw)["eval_targets"]
    _step("5/5 validate the submission: format, recompute from checkpoints, score on the synthetic test phase")
    _run("validate_submission.py", DATASET, str(submission), "--raw-dir", str(settings.synthetic_raw),
         "--recompute", str(out_dir / contracts.ENSEMBLE_JSON), "--score", str(test_targets))
    return {"experiment": exp_dir, "ensemble": out_dir, "submission": submission, "test_targets": test_targets}


def comparison_rows(paths: dict[str, Path], dataset: str = DATASET) -> list[tuple[str, str, dict[str, float]]]:
    """(row, phase, metrics) for truth, smoothing, best single model, top-N and greedy ensembles
    (``paths["ensemble"]``: build_ensemble.py's output folder; synthetic data of ``dataset``). Both
    ensembles' rates are smoothed over time as ensemble.json records (the width chosen on val)."""
    from threadpoolctl import threadpool_limits

    from .baselines import smoothing_rates, tune_smoothing
    from .ensemble.smoothing import RateSmoothing, smooth_rates
    from .rates import load_rates, weighted_mean_rates
    from .scoring import evaluate_rates
    from .synthetic import true_rates
    from .tensors import load_eval_targets

    settings = get_settings()
    raw, cache = settings.synthetic_raw, settings.cache_dir
    record = json.loads((paths["ensemble"] / contracts.ENSEMBLE_JSON).read_text())
    exp_dir = Path(record["experiment_dir"])
    library = {(c["trial_id"], c["kind"]): exp_dir / c["checkpoint_dir"] for c in record["curve"]["library"]}
    best = record["best_single"]
    best_dir = exp_dir / best["checkpoint_dir"]
    smoothing = RateSmoothing.from_json(record.get("smoothing"), where=str(paths["ensemble"] / contracts.ENSEMBLE_JSON))
    smoothed = f", {smoothing.sd_ms:g} ms smoothed" if smoothing.sd_ms else ""

    def selection(name: str, phase: str):
        sel = record.get(name)
        if not sel:
            return None
        files = [library[(m["trial_id"], m["kind"])] / contracts.rates_filename(phase) for m in sel["members"]]
        return smooth_rates(weighted_mean_rates(files, [m["weight"] for m in sel["members"]]), smoothing.sd_bins)

    rows = []
    with threadpool_limits(1, "blas"):
        smooth = tune_smoothing(dataset, raw, cache)  # kernel width and alpha by val co-bps, for both phases
        for phase in ("val", "test"):
            targets = load_eval_targets(dataset, phase, raw, cache)
            candidates = {
                "ground truth": true_rates(dataset, phase, raw),
                "smoothing baseline": smoothing_rates(dataset, phase, raw, cache, kern_sd_ms=smooth["kern_sd_ms"],
                                                      alpha=smooth["alpha"]),
                "best single NDT": load_rates(best_dir / contracts.rates_filename(phase)),
                f"top-N ensemble (N={(record.get('topn') or {}).get('size', '?')}{smoothed})": selection("topn", phase),
                f"greedy ensemble ({len((record.get('greedy') or {}).get('members', []))} distinct{smoothed})":
                    selection("greedy", phase),
            }
            for name, rates in candidates.items():
                if rates is not None:
                    rows.append((name, phase, evaluate_rates(dataset, rates, targets)))
    return rows


def format_table(rows) -> str:
    cols = ("co_bps", "vel_r2", "psth_r2", "fp_bps")
    width = max([30] + [len(name) + 1 for name, _, _ in rows])
    lines = [f"{'':<{width}}{'phase':>6}" + "".join(f"{c:>10}" for c in cols)]
    for name, phase, metrics in rows:
        lines.append(f"{name:<{width}}{phase:>6}" + "".join(f"{metrics.get(c, float('nan')):>10.4f}" for c in cols))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nlbpipe.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="full (default, ~10 min) or tiny")
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: demo(args))


def demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    start = time.time()
    settings = get_settings()
    print(f"nlbpipe demo: NLB_HOME={settings.home}")
    paths = run_pipeline(SIZES[args.size])
    rows = comparison_rows(paths)
    table = format_table(rows)
    (paths["ensemble"] / "demo_table.txt").write_text(table + "\n")
    print(f"\n=== {DATASET}: val phase (targets known) and synthetic test phase (hidden targets) ===")
    print(table)
    print("\noutputs:")
    for name, path in {**paths, "checkpoints.csv": paths["experiment"] / contracts.CHECKPOINTS_CSV,
                       "search_progress.png": paths["experiment"] / contracts.SEARCH_PROGRESS_PNG,
                       "ensemble_curve.png": paths["ensemble"] / contracts.ENSEMBLE_CURVE_PNG,
                       "table": paths["ensemble"] / "demo_table.txt"}.items():
        print(f"  {name:<20} {path}")
    print(f"\ndone in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
