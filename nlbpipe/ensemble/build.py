"""An ensemble from an experiment folder: the library of checkpoints with rates, scored and selected."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..contracts import CHECKPOINTS_CSV as CSV_NAME
from ..contracts import RATES_TEST, RATES_VAL, RUN_CONFIG
from ..errors import EnsembleError
from ..ranking import Checkpoint, read_checkpoints_csv, with_rates
from ..rates import read_rate_tensor, weighted_mean_rates
from ..tensors import read_targets_file
from .selection import SELECT_DEFAULTS, Selection, choose, select
from .smoothing import RateSmoothing, choose_smoothing, smooth_rates
from .statistics import HeldoutScorer


@dataclass
class EnsembleResult:
    library: list[Checkpoint]
    single_co_bps: np.ndarray  # each library checkpoint alone, on val (recomputed from its rates)
    curve: np.ndarray  # top-N val co-bps, N = 1..M
    topn: Selection
    greedy: Selection | None
    greedy_path: np.ndarray | None  # in-sample val co-bps after each greedy pick (from n_init picks)
    greedy_cv_path: np.ndarray | None
    n_init: int
    chosen: Selection
    folds: int
    seed: int
    smoothing: RateSmoothing | None = None  # applied to the chosen ensemble's rates (nlbpipe.ensemble.smoothing)

    @property
    def val_co_bps(self) -> float:
        """Val co-bps of the rates submitted: the chosen ensemble's, after smoothing."""
        if self.smoothing is not None:
            return self.smoothing.val_co_bps[self.smoothing.sd_ms]
        return self.chosen.val_co_bps

    @property
    def members(self) -> list[tuple[Checkpoint, float, int]]:
        return [(self.library[i], w, c) for i, w, c in zip(self.chosen.indices, self.chosen.weights, self.chosen.counts)]



def build_library(
    experiment_dir: Path, spikes_heldout: np.ndarray, max_models: int = 50, log=None
) -> tuple[list[Checkpoint], HeldoutScorer]:
    """The top ``max_models`` checkpoints with rates, each reduced to its co-bps statistics."""
    if max_models < 1:
        raise EnsembleError(f"--max-models {max_models}: must be at least 1")
    library = with_rates(read_checkpoints_csv(experiment_dir), log=log)[:max_models]
    if not library:
        raise EnsembleError(f"no checkpoint in {experiment_dir / CSV_NAME} has {RATES_VAL} and {RATES_TEST} yet")
    scorer = HeldoutScorer(spikes_heldout)
    for i, ckpt in enumerate(library):
        scorer.add(read_rate_tensor(ckpt.rates_val, "eval_rates_heldout"), name=str(ckpt.rates_val))
        if log and ((i + 1) % 10 == 0 or i + 1 == len(library)):
            log(f"read val rates of {i + 1}/{len(library)} checkpoints")
    return library, scorer


MAX_MODELS = 50  # the library: the top M checkpoints by val co-bps


def build_ensemble(
    experiment_dir: str | os.PathLike, spikes_heldout: np.ndarray, max_models: int = MAX_MODELS, log=None,
    smooth_ms: float | str | None = None, bin_ms: int | None = None, **options
) -> EnsembleResult:
    """Rank, score and select; no files are written (see :func:`write_ensemble`).

    ``options`` are :func:`select`'s (method, size, greedy_max_size, n_init, folds, seed); its
    defaults are the only ones (``SELECT_DEFAULTS``). ``smooth_ms``: the sd of the Gaussian the
    chosen ensemble's log rates are smoothed with over time, in ms, or ``"auto"`` to choose it on val
    co-bps (both need the data's ``bin_ms``); None or 0 for none.
    """
    unknown = sorted(set(options) - set(SELECT_DEFAULTS))
    if unknown:
        raise TypeError(f"build_ensemble() got unknown option(s) {', '.join(unknown)}")
    opts = {**SELECT_DEFAULTS, **options}
    method, n_init, folds, seed = opts["method"], opts["n_init"], opts["folds"], opts["seed"]
    experiment_dir = Path(experiment_dir).absolute()
    library, scorer = build_library(experiment_dir, spikes_heldout, max_models, log)
    found = select(scorer, **opts)
    if log:
        for ckpt, score in zip(library, found.singles):
            if abs(score - ckpt.val_co_bps) > 1e-3:
                log(f"warning: {ckpt.describe()} scores {score:.4f} val co-bps from its {RATES_VAL}, "
                    f"checkpoints.csv says {ckpt.val_co_bps:.4f} (stale rates file?)")
    result = EnsembleResult(
        library=library, single_co_bps=found.singles, curve=found.curve, topn=found.topn, greedy=found.greedy,
        greedy_path=found.greedy_path, greedy_cv_path=found.greedy_cv_path, n_init=min(n_init, len(library)),
        chosen=choose(method, found.topn, found.greedy),
        folds=folds if folds >= 2 else 0, seed=seed,
    )
    if smooth_ms not in (None, 0, 0.0):
        if bin_ms is None:
            raise EnsembleError("smoothing the ensemble's rates needs the data's bin size (bin_ms)")
        if smooth_ms == "auto":
            result.smoothing = choose_smoothing(ensemble_rates(result, "val"), spikes_heldout, bin_ms)
            if log:
                tried = ", ".join(f"{k:g} ms {v:.4f}" for k, v in result.smoothing.val_co_bps.items())
                log(f"rate smoothing by val co-bps: {tried}; chosen {result.smoothing.sd_ms:g} ms")
        else:
            result.smoothing = choose_smoothing(ensemble_rates(result, "val"), spikes_heldout, bin_ms,
                                                grid_ms=(float(smooth_ms),))
    return result


def ensemble_rates(result: EnsembleResult, phase: str) -> dict[str, np.ndarray]:
    """The chosen members' weighted mean rates of ``phase``, smoothed as ``result.smoothing`` says."""
    files = [(c.rates_val if phase == "val" else c.rates_test) for c, _, _ in result.members]
    rates = weighted_mean_rates(files, [w for _, w, _ in result.members])
    return smooth_rates(rates, result.smoothing.sd_bins) if result.smoothing is not None else rates


def data_dirs(experiment_dir: Path, library: Sequence[Checkpoint] | None = None) -> tuple[str, str]:
    """(raw_dir, cache_dir) the experiment trained on: its best checkpoint's config.yaml, else settings."""
    import yaml

    rows = library if library is not None else with_rates(read_checkpoints_csv(experiment_dir))
    for ckpt in rows[:1]:
        cfg_path = ckpt.path / RUN_CONFIG
        if cfg_path.is_file():
            data = (yaml.safe_load(cfg_path.read_text()) or {}).get("data", {})
            if data.get("raw_dir"):
                return str(data["raw_dir"]), str(data.get("cache_dir") or "")
    from ..settings import get_settings

    s = get_settings()
    return str(s.data_raw), str(s.cache_dir)


def val_targets(dataset_key: str, experiment_dir: Path, targets_file=None) -> dict:
    """The val-phase eval targets: ``--targets FILE`` or nlbpipe.tensors from the experiment's data."""
    if targets_file:
        return read_targets_file(targets_file, dataset_key)
    raw_dir, cache_dir = data_dirs(experiment_dir)
    from ..tensors import load_eval_targets

    targets = load_eval_targets(dataset_key, "val", raw_dir, cache_dir)
    if dataset_key not in targets:
        targets = {dataset_key: targets}
    return targets
