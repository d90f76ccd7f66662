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
from typing import Iterable

import numpy as np

from . import contracts
from .contracts import CHECKPOINTS_CSV, RATES_TEST, RATES_VAL, SEARCH_PROGRESS_PNG, TERMINAL_STATUSES
from .errors import EnsembleError, NlbpipeError
from .fileio import atomic_path

log = logging.getLogger(__name__)

CSV_NAME = CHECKPOINTS_CSV
PLOT_NAME = SEARCH_PROGRESS_PNG
SCORE_COLUMNS = ("val_co_bps", "val_vel_r2", "val_psth_r2", "val_fp_bps", "val_tp_corr")
FINAL = TERMINAL_STATUSES


class RankingError(NlbpipeError, RuntimeError):
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
    return sorted(p for p in experiment_dir.glob(f"{contracts.TRIAL_PREFIX}*") if (p / contracts.TRIAL_RUN_DIR).is_dir())


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
    cfg = load_config(ckpt_dir / contracts.RUN_CONFIG)
    rates_path = ckpt_dir / contracts.RATES_VAL
    if not rates_path.is_file():
        from .ndt.inference import load_checkpoint, predict_rates
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
        trial_id = trial_dir.name.removeprefix(contracts.TRIAL_PREFIX)
        run_dir = trial_dir / contracts.TRIAL_RUN_DIR
        status = contracts.read_status(run_dir).get("status", "unknown")
        if status not in FINAL:
            skipped.append(trial_id)
            continue
        params = _read_json(trial_dir / "params.json")
        finished = (run_dir / contracts.STATUS_JSON).stat().st_mtime
        checkpoints = (run_dir / contracts.CHECKPOINTS_DIR).glob("*")
        for ckpt in sorted(p for p in checkpoints if (p / contracts.MODEL_FILE).is_file()):
            metrics = _read_json(ckpt / contracts.METRICS_JSON)
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


# ------------------------------------------------- reading the table back (ensembles, --recompute)



@dataclass
class Checkpoint:
    """One row of checkpoints.csv: a kept checkpoint of one trial."""

    trial_id: str
    kind: str
    checkpoint_dir: str  # relative to the experiment folder, as written in the csv
    path: Path  # absolute
    val_co_bps: float  # as ranked in the csv
    csv_metrics: dict = field(default_factory=dict)

    @property
    def rates_val(self) -> Path:
        return self.path / RATES_VAL

    @property
    def rates_test(self) -> Path:
        return self.path / RATES_TEST

    def describe(self) -> str:
        return f"{self.trial_id}/{self.kind} ({self.checkpoint_dir})"


def read_checkpoints_csv(experiment_dir: str | os.PathLike) -> list[Checkpoint]:
    """All rows of ``<experiment>/checkpoints.csv``, best val co-bps first (NaN scores dropped)."""
    import pandas as pd

    experiment_dir = Path(experiment_dir)
    csv = experiment_dir / CSV_NAME
    if not csv.is_file():
        raise EnsembleError(f"{csv} not found: is {experiment_dir} an experiment folder (run_hyperopt.py output)?")
    try:
        table = pd.read_csv(csv, dtype={"trial_id": str, "kind": str, "checkpoint_dir": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise EnsembleError(f"{csv} is not a readable csv: {err}") from err
    missing = [c for c in ("trial_id", "kind", "checkpoint_dir", "val_co_bps") if c not in table.columns]
    if missing:
        raise EnsembleError(f"{csv} lacks column(s) {', '.join(missing)}; found {', '.join(map(str, table.columns))}")
    table["val_co_bps"] = pd.to_numeric(table["val_co_bps"], errors="coerce")
    table = table[np.isfinite(table["val_co_bps"])].sort_values("val_co_bps", ascending=False, kind="stable")
    metric_cols = [c for c in table.columns if c.startswith("val_")]
    rows = []
    for row in table.to_dict("records"):
        rel = str(row["checkpoint_dir"])
        rows.append(
            Checkpoint(
                trial_id=str(row["trial_id"]),
                kind=str(row["kind"]),
                checkpoint_dir=rel,
                path=(experiment_dir / rel).absolute(),
                val_co_bps=float(row["val_co_bps"]),
                csv_metrics={c: _plain(row[c]) for c in metric_cols if c in row},
            )
        )
    if not rows:
        raise EnsembleError(f"{csv} has no checkpoint with a finite val_co_bps")
    return rows


def _plain(value):
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def with_rates(checkpoints: Iterable[Checkpoint], log=None) -> list[Checkpoint]:
    """Keep checkpoints that have both rates files (a run still going has neither yet)."""
    kept, skipped = [], []
    for ckpt in checkpoints:
        (kept if ckpt.rates_val.is_file() and ckpt.rates_test.is_file() else skipped).append(ckpt)
    if skipped and log:
        names = ", ".join(c.describe() for c in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        log(f"skipping {len(skipped)} checkpoint(s) without {RATES_VAL}/{RATES_TEST}: {names}")
    return kept


def find_experiment(dataset_key: str, experiment: str | None, results_dir: str | os.PathLike) -> Path:
    """``--experiment PATH|NAME``, or the dataset's only / most recently ranked experiment."""
    if experiment:
        path = Path(experiment)
        if path.is_dir():
            return path.absolute()
        candidate = Path(results_dir) / dataset_key / experiment
        if candidate.is_dir():
            return candidate.absolute()
        raise EnsembleError(f"--experiment {experiment}: neither a folder nor an experiment under {Path(results_dir) / dataset_key}")
    root = Path(results_dir) / dataset_key
    found = sorted(root.glob(f"*/{CSV_NAME}"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not found:
        raise EnsembleError(f"no experiment with a {CSV_NAME} under {root}; run run_hyperopt.py {dataset_key} or pass --experiment")
    return found[-1].parent.absolute()

