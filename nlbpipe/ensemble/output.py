"""What build_ensemble.py writes: the ensemble's val rates, the submission, the curve plot, ensemble.json."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ..contracts import ENSEMBLE_CURVE_PNG as CURVE_PNG
from ..contracts import ENSEMBLE_JSON, RATES_VAL, submission_filename
from ..fileio import atomic_path, write_json_atomic
from ..ranking import Checkpoint
from ..rates import load_rates, save_rates
from ..submission import write_submission
from .build import EnsembleResult, ensemble_rates
from .selection import Selection


def _selection_json(sel: Selection | None, library: list[Checkpoint]) -> dict | None:
    if sel is None:
        return None
    return {
        "method": sel.method, "size": sel.size, "val_co_bps": sel.val_co_bps, "cv_co_bps": _none_nan(sel.cv_co_bps),
        "members": [{"trial_id": library[i].trial_id, "kind": library[i].kind, "weight": w, "count": c}
                    for i, w, c in zip(sel.indices, sel.weights, sel.counts)],
    }


def _none_nan(x):
    return None if x is None or not np.isfinite(x) else float(x)


def write_ensemble(
    result: EnsembleResult,
    experiment_dir: Path,
    dataset_key: str,
    out_dir: str | os.PathLike,
    targets: dict | None = None,
) -> tuple[dict[str, Path], dict[str, dict]]:
    """Write rates_val.h5, the submission, the curve plot and ensemble.json (last, atomically).

    ensemble.json is written last: its presence means every file it names is complete. With val
    ``targets`` (nlb_tools eval-target dict) the ensemble and the best single checkpoint are scored
    on every val metric; returns (paths, {"ensemble": metrics, "best_single": metrics}).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "rates_val": out_dir / RATES_VAL,
        "submission": out_dir / submission_filename(dataset_key),
        "curve_png": out_dir / CURVE_PNG,
        "ensemble_json": out_dir / ENSEMBLE_JSON,
    }
    val_rates = ensemble_rates(result, "val")
    metrics: dict[str, dict] = {}
    if targets is not None:
        from ..scoring import evaluate_rates

        best = result.library[int(np.nanargmax(result.single_co_bps))]
        metrics["best_single"] = evaluate_rates(dataset_key, load_rates(best.rates_val), targets)
        metrics["ensemble"] = evaluate_rates(dataset_key, val_rates, targets)
    # A reader must never pair this run's files with an earlier run's ensemble.json: it goes first,
    # and comes back (atomically) only after everything it names is written.
    paths["ensemble_json"].unlink(missing_ok=True)
    save_rates(paths["rates_val"], val_rates, dataset=dataset_key, phase="val", method=result.chosen.method)
    write_submission(paths["submission"], dataset_key, ensemble_rates(result, "test"))
    plot_curve(result, paths["curve_png"], dataset_key)
    write_json_atomic(paths["ensemble_json"], ensemble_record(result, experiment_dir, dataset_key, paths, metrics))
    return paths, metrics


def ensemble_record(result: EnsembleResult, experiment_dir: Path, dataset_key: str, paths: dict, val_metrics) -> dict:
    lib = result.library
    best = int(np.nanargmax(result.single_co_bps))
    return {
        "dataset": dataset_key,
        "experiment_dir": str(Path(experiment_dir).absolute()),
        "method": result.chosen.method,
        "size": result.chosen.size,
        "n_members": len(result.chosen.indices),
        "members": [
            {
                "rank": i + 1, "trial_id": c.trial_id, "kind": c.kind, "checkpoint_dir": c.checkpoint_dir,
                "checkpoint_path": str(c.path), "weight": w, "count": n,
                "val_co_bps": float(result.single_co_bps[i]), "csv_metrics": c.csv_metrics,
            }
            for i, w, n in zip(result.chosen.indices, result.chosen.weights, result.chosen.counts)
            for c in [lib[i]]
        ],
        "ensemble": {
            "val_co_bps": result.val_co_bps, "unsmoothed_val_co_bps": result.chosen.val_co_bps,
            "cv_co_bps": _none_nan(result.chosen.cv_co_bps),
            "val_metrics": (val_metrics or {}).get("ensemble", {}),
        },
        "best_single": {"trial_id": lib[best].trial_id, "kind": lib[best].kind,
                        "checkpoint_dir": lib[best].checkpoint_dir, "val_co_bps": float(result.single_co_bps[best]),
                        "val_metrics": (val_metrics or {}).get("best_single", {})},
        "topn": _selection_json(result.topn, lib),
        "greedy": _selection_json(result.greedy, lib),
        "curve": {
            "n": list(range(1, len(result.curve) + 1)),
            "val_co_bps": [float(x) for x in result.curve],
            "library": [{"trial_id": c.trial_id, "kind": c.kind, "checkpoint_dir": c.checkpoint_dir,
                         "val_co_bps": float(s)} for c, s in zip(lib, result.single_co_bps)],
        },
        "greedy_path": None if result.greedy_path is None else {
            "size": list(range(result.n_init, result.n_init + len(result.greedy_path))),
            "val_co_bps": [float(x) for x in result.greedy_path],
            "cv_co_bps": None if result.greedy_cv_path is None else [float(x) for x in result.greedy_cv_path],
        },
        "smoothing": None if result.smoothing is None else result.smoothing.to_json(),
        "cv": {"folds": result.folds, "seed": result.seed, "over": "val trials"},
        "files": {k: str(v) for k, v in paths.items() if k != "ensemble_json"},
    }


def plot_curve(result: EnsembleResult, path: Path, dataset_key: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    n = np.arange(1, len(result.curve) + 1)
    ax.plot(n, result.curve, "o-", ms=3, label="top-N mean")
    ax.axvline(result.topn.size, color="C0", ls=":", lw=1)
    if result.greedy_path is not None:
        g = np.arange(result.n_init, result.n_init + len(result.greedy_path))
        ax.plot(g, result.greedy_path, "s-", ms=3, color="C1", label="greedy (in-sample)")
        if result.greedy_cv_path is not None:
            ax.plot(g, result.greedy_cv_path, "--", color="C1", alpha=0.6, label="greedy (CV over val trials)")
        ax.axvline(result.greedy.size, color="C1", ls=":", lw=1)
    ax.axhline(np.nanmax(result.single_co_bps), color="gray", ls="--", lw=1, label="best single checkpoint")
    ax.set_xlabel("ensemble size (checkpoints, or greedy picks)")
    ax.set_ylabel("val co-bps")
    ax.set_title(f"{dataset_key}: ensemble val co-bps (chosen: {result.chosen.method}, {result.chosen.size})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def summary_lines(result: EnsembleResult) -> list[str]:
    """The top-N and greedy figures side by side, for the terminal."""
    best = float(np.nanmax(result.single_co_bps))
    rows = [("best single", "1", f"{best:.4f}", "")]
    for sel in (result.topn, result.greedy):
        if sel is not None:
            cv = f"{sel.cv_co_bps:.4f}" if np.isfinite(sel.cv_co_bps) else "-"
            label = "top-N" if sel.method == "topn" else "greedy"
            size = f"{sel.size}" if sel.method == "topn" else f"{sel.size} picks / {len(sel.indices)} ckpts"
            rows.append((label + (" *" if sel is result.chosen else ""), size, f"{sel.val_co_bps:.4f}", cv))
    head = ("method", "size", "val co-bps", f"CV co-bps ({result.folds}-fold)" if result.folds else "CV co-bps")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head)] + [fmt.format(*r) for r in rows] + ["(* used for the submission)"]
    sm = result.smoothing
    if sm is not None:
        lines.append(f"rates smoothed with a {sm.sd_ms:g} ms Gaussian (chosen by {sm.chosen_by}): val co-bps {result.chosen.val_co_bps:.4f} -> {result.val_co_bps:.4f}")
    return lines


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
