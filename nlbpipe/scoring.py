"""NLB metrics through nlb_tools.evaluation, under one set of names.

nlb_tools reports ``co-bps``, ``vel R2``, ``psth R2``, ``fp-bps``, ``tp corr`` and, for the
mc_maze scaling datasets, prefixes them with the trial count (``[100] co-bps``). Here every
metric has one snake_case name wherever it is stored or printed.
"""

from __future__ import annotations

import logging
import re

import numpy as np
from nlb_tools.evaluation import bits_per_spike, evaluate
from threadpoolctl import threadpool_limits

from .rates import RATE_KEYS

METRICS = ("co_bps", "vel_r2", "psth_r2", "fp_bps", "tp_corr")
_NLB_NAMES = {"co-bps": "co_bps", "vel R2": "vel_r2", "psth R2": "psth_r2", "fp-bps": "fp_bps", "tp corr": "tp_corr"}


class ScoringError(ValueError):
    """The rates and the targets do not fit together."""


def co_bps(rates_heldout: np.ndarray, spikes_heldout: np.ndarray) -> float:
    """Co-smoothing bits per spike of held-out rates, nlb_tools' formula."""
    rates = np.asarray(rates_heldout, dtype=np.float64)
    spikes = np.asarray(spikes_heldout, dtype=np.float64)
    if rates.shape != spikes.shape:
        raise ScoringError(f"held-out rates have shape {rates.shape}, spikes {spikes.shape}")
    return float(bits_per_spike(rates, spikes))


def evaluate_rates(dataset_key: str, rates: dict, targets: dict) -> dict[str, float]:
    """Score the six rate tensors of one dataset key against nlb_tools eval targets.

    ``targets`` is what ``nlb_tools.make_tensors.make_eval_target_tensors`` returns (or its
    ``eval_data_*.h5`` file opened with h5py): ``{dataset_key: {...}}``.
    """
    if dataset_key not in targets:
        raise ScoringError(f"eval targets hold {sorted(targets)}, not {dataset_key!r}")
    missing = [k for k in RATE_KEYS if k not in rates]
    if missing:
        raise ScoringError(f"rates for {dataset_key} lack {', '.join(missing)}")
    expected = np.shape(targets[dataset_key]["eval_spikes_heldout"])
    found = np.shape(rates["eval_rates_heldout"])
    if tuple(expected) != tuple(found):
        raise ScoringError(
            f"{dataset_key}: eval_rates_heldout has shape {found}, the eval targets {tuple(expected)}"
        )
    submission = {dataset_key: {k: np.asarray(rates[k], dtype=np.float64) for k in RATE_KEYS}}
    nlb_logger = logging.getLogger("nlb_tools.evaluation")
    level = nlb_logger.level
    nlb_logger.setLevel(logging.WARNING)
    try:
        # nlb_tools' ridge/GLM fits are small: multi-threaded BLAS makes them ~15x slower here.
        with threadpool_limits(1, "blas"):
            results = evaluate(targets, submission)
    finally:
        nlb_logger.setLevel(level)
    scores: dict[str, float] = {}
    for split in results:
        for values in split.values():
            for name, value in values.items():
                name = re.sub(r"^\[\d+\]\s*", "", name)
                scores[_NLB_NAMES.get(name, name)] = float(value)
    return scores
