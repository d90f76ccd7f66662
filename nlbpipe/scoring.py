"""NLB metrics through nlb_tools.evaluation, under one set of names.

nlb_tools reports ``co-bps``, ``vel R2``, ``psth R2``, ``fp-bps``, ``tp corr`` and, for the
mc_maze scaling datasets, prefixes them with the trial count (``[100] co-bps``). Here every
metric has one snake_case name wherever it is stored or printed.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np

from .errors import NlbpipeError
from .rates import RATE_KEYS

# nlb_tools.evaluation pulls in scikit-learn, scipy and pandas (~150 MB): imported where scored, so
# a training run, which only needs co_bps_torch, does not carry them.

_NLB_NAMES = {"co-bps": "co_bps", "vel R2": "vel_r2", "psth R2": "psth_r2", "fp-bps": "fp_bps", "tp corr": "tp_corr"}


class ScoringError(NlbpipeError, ValueError):
    """The rates and the targets do not fit together."""


def co_bps(rates_heldout: np.ndarray, spikes_heldout: np.ndarray) -> float:
    """Co-smoothing bits per spike of held-out rates, nlb_tools' formula."""
    from nlb_tools.evaluation import bits_per_spike

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
    scores: dict[str, float] = {}
    for _, metrics in nlb_evaluate(targets, submission):
        scores.update(metrics)
    return scores


def nlb_evaluate(targets, submission) -> list[tuple[str, dict[str, float]]]:
    """``nlb_tools.evaluation.evaluate`` as EvalAI runs it, as ``[(split, {metric: value})]``.

    ``targets`` and ``submission`` are paths or dicts, as nlb_tools takes them. Metric names lose
    the scaling datasets' ``[100] `` prefix and become snake_case; nlb_tools' INFO logging is
    quieted, and BLAS runs on one thread (its ridge decoders are tiny: threaded BLAS made them
    ~15x slower on a busy 2-core machine).
    """
    from nlb_tools.evaluation import evaluate
    from threadpoolctl import threadpool_limits

    nlb_logger = logging.getLogger("nlb_tools.evaluation")
    level = nlb_logger.level
    nlb_logger.setLevel(logging.WARNING)
    try:
        with threadpool_limits(1, "blas"):
            results = evaluate(targets, submission)
    finally:
        nlb_logger.setLevel(level)
    rows = []
    for split in results:
        for split_name, values in split.items():
            rows.append((split_name, {_metric_name(k): float(v) for k, v in values.items()}))
    return rows


def _metric_name(nlb_name: str) -> str:
    name = re.sub(r"^\[\d+\]\s*", "", nlb_name)
    return _NLB_NAMES.get(name, name)

def co_bps_torch(rates_heldout, spikes_heldout) -> float:
    """:func:`co_bps` on tensors where they are (a GPU, mid-training), with nlb_tools' conventions.

    NaN spike bins are left out; the null model is each neuron's mean count; zero rates count as
    1e-9. The log k! terms cancel between model and null, so they are not computed.
    """
    import torch

    rates = rates_heldout.double()
    spikes = spikes_heldout.double()
    if rates.shape != spikes.shape:
        raise ScoringError(f"held-out rates have shape {tuple(rates.shape)}, spikes {tuple(spikes.shape)}")
    valid = ~torch.isnan(spikes)
    counts = torch.where(valid, spikes, torch.zeros_like(spikes))
    null = counts.sum(dim=(0, 1)) / valid.sum(dim=(0, 1)).clamp(min=1)

    def nll(r: torch.Tensor) -> torch.Tensor:
        r = torch.where(r == 0, torch.full_like(r, 1e-9), r)
        return torch.where(valid, r - counts * torch.log(r), torch.zeros_like(r)).sum()

    return float((nll(null.expand_as(counts)) - nll(rates)) / counts.sum() / math.log(2))
