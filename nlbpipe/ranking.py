"""Every kept checkpoint of a search, scored on the val phase: ``checkpoints.csv`` and a progress plot.

The ranking is what ensembles are built from (the 2021 winners ranked ~100 trials' snapshots by
val co-bps and averaged the top N), so the score is the official one, ``nlbpipe.scoring`` on the
checkpoint's saved ``rates_val.h5``, not the co-bps the training loop logged as it went.

Works on a finished or a running experiment: checkpoints of runs still training are left out
(their rates are written when the run ends) and counted in the summary.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .fileio import atomic_path

log = logging.getLogger(__name__)

CSV_NAME = "checkpoints.csv"
PLOT_NAME = "search_progress.png"
SCORE_COLUMNS = ("val_co_bps", "val_vel_r2", "val_psth_r2", "val_fp_bps", "val_tp_corr")
FINAL = ("completed", "early_stopped", "stopped", "diverged")


class RankingError(RuntimeError):
    """An experiment folder that cannot be ranked; names the folder or file."""


@dataclass
class RankResult:
    csv_path: Path
    plot_path: Path | None
    n_checkpoints: int
    n_trials: int
    skipped_running: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _trial_dirs(experiment_dir: Path) -> list[Path]:
    return sorted(p for p in experiment_dir.glob("trial_*") if (p / "run").is_dir())


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class _Targets:
    """Eval targets and val tensors per (dataset key, raw dir, cache dir): loaded once per ranking."""

    def __init__(self):
        self._targets: dict = {}
        self._tensors: dict = {}

    def targets(self, cfg) -> dict:
        key = (cfg.data.dataset, cfg.data.raw_dir, cfg.data.cache_dir)
        if key not in self._targets:
            from .tensors import load_eval_targets

            self._targets[key] = load_eval_targets(cfg.data.dataset, "val", Path(cfg.data.raw_dir),
                                                   Path(cfg.data.cache_dir))
        return self._targets[key]

    def tensors(self, cfg) -> dict:
        key = (cfg.data.dataset, cfg.data.raw_dir, cfg.data.cache_dir)
        if key not in self._tensors:
            from .tensors import load_tensors

            self._tensors[key] = load_tensors(cfg.data.dataset, "val", Path(cfg.data.raw_dir),
                                              Path(cfg.data.cache_dir))
        return self._tensors[key]


def score_checkpoint(ckpt_dir: Path, cache: _Targets | None = None) -> dict[str, float]:
    """Val-phase scores of one checkpoint folder (computing its rates_val.h5 first if missing)."""
    from .config import load_config
    from .rates import load_rates
    from .scoring import evaluate_rates

    cache = cache or _Targets()
    cfg = load_config(ckpt_dir / "config.yaml")
    rates_path = ckpt_dir / "rates_val.h5"
    if not rates_path.is_file():
        from .inference import load_checkpoint, predict_rates
        from .rates import save_rates

        model, _ = load_checkpoint(ckpt_dir)
        save_rates(rates_path, predict_rates(model, cache.tensors(cfg)), phase="val")
    scores = evaluate_rates(cfg.data.dataset, load_rates(rates_path), cache.targets(cfg))
    return {f"val_{k}": float(v) for k, v in scores.items()}


def collect_rows(experiment_dir: Path) -> tuple[list[dict], RankResult]:
    experiment_dir = Path(experiment_dir)
    cache = _Targets()
    rows, skipped, failed = [], [], []
    trials = _trial_dirs(experiment_dir)
    for trial_dir in trials:
        trial_id = trial_dir.name.removeprefix("trial_")
        run_dir = trial_dir / "run"
        status = _read_json(run_dir / "status.json").get("status", "unknown")
        if status not in FINAL:
            skipped.append(trial_id)
            continue
        params = _read_json(trial_dir / "params.json")
        finished = (run_dir / "status.json").stat().st_mtime
        for ckpt in sorted(p for p in (run_dir / "checkpoints").glob("*") if (p / "model.pt").is_file()):
            metrics = _read_json(ckpt / "metrics.json")
            row = {"trial_id": trial_id, "kind": ckpt.name,
                   "checkpoint_dir": ckpt.relative_to(experiment_dir).as_posix()}
            try:
                row.update(score_checkpoint(ckpt, cache))  # one BLAS thread: scoring.nlb_evaluate
            except Exception as err:  # one bad checkpoint must not hide the other hundreds
                log.warning("cannot score %s: %s", ckpt, err)
                failed.append(f"{row['checkpoint_dir']}: {err}")
                row["error"] = str(err)
            row.update({"step": metrics.get("step"), "train_val_co_bps": metrics.get("val_co_bps"),
                        "val_masked_loss": metrics.get("val_masked_loss"),
                        "val_unmasked_loss": metrics.get("val_unmasked_loss"),
                        "trial_status": status, "trial_finished": finished})
            row.update({f"hp/{k}": v for k, v in sorted(params.items())})
            rows.append(row)
    result = RankResult(experiment_dir / CSV_NAME, None, len(rows), len(trials) - len(skipped), skipped, failed)
    return rows, result


def _frame(rows: list[dict]):
    import pandas as pd

    df = pd.DataFrame(rows)
    lead = ["trial_id", "kind", "checkpoint_dir", *SCORE_COLUMNS]
    for col in lead:
        if col not in df:
            df[col] = np.nan
    if "val_tp_corr" in df and df["val_tp_corr"].isna().all():
        df = df.drop(columns="val_tp_corr")
        lead.remove("val_tp_corr")
    hps = sorted(c for c in df.columns if c.startswith("hp/"))
    rest = [c for c in df.columns if c not in lead and c not in hps]
    df = df[lead + rest + hps]
    return df.sort_values("val_co_bps", ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def plot_progress(df, path: Path) -> Path | None:
    """Best val co-bps so far against trials finished, over each trial's own best."""
    if df.empty or df["val_co_bps"].isna().all():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_trial = (df.groupby("trial_id").agg(val_co_bps=("val_co_bps", "max"), finished=("trial_finished", "first"))
                 .sort_values("finished"))
    n = np.arange(1, len(per_trial) + 1)
    values = per_trial["val_co_bps"].to_numpy(dtype=float)
    best = np.fmax.accumulate(np.where(np.isnan(values), -np.inf, values))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(n, values, s=14, color="0.55", label="trial (best checkpoint)")
    ax.step(n, np.where(np.isfinite(best), best, np.nan), where="post", color="C0", label="best so far")
    ax.set_xlabel("trials finished")
    ax.set_ylabel("val co-bps")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def rank_experiment(experiment_dir: str | os.PathLike) -> RankResult:
    """Score every kept checkpoint of finished trials; write checkpoints.csv and search_progress.png."""
    experiment_dir = Path(experiment_dir)
    if not experiment_dir.is_dir():
        raise RankingError(f"experiment folder {experiment_dir} does not exist")
    rows, result = collect_rows(experiment_dir)
    df = _frame(rows) if rows else None
    if df is None:
        import pandas as pd

        df = pd.DataFrame(columns=["trial_id", "kind", "checkpoint_dir", *SCORE_COLUMNS[:-1]])
    with atomic_path(result.csv_path) as tmp:
        df.to_csv(tmp, index=False)
    if rows:
        result.plot_path = plot_progress(df, experiment_dir / PLOT_NAME)
    return result


def top(experiment_dir: str | os.PathLike, n: int = 5):
    """The ``n`` best rows of an experiment's checkpoints.csv (for printing)."""
    import pandas as pd

    path = Path(experiment_dir) / CSV_NAME
    if not path.is_file():
        raise RankingError(f"{path} not found; rank the experiment first")
    df = pd.read_csv(path)
    return df.head(n)

