"""Smoothing an ensemble's rates along time, the kernel width chosen by val co-bps.

Firing rates change smoothly from bin to bin; an NDT's per-bin read-out, trained for a few hundred
passes on ~100 trials, does not: its rates carry bin-to-bin noise that costs bits per spike. A Gaussian
kernel over the log rates removes it. Its width is chosen like the ensemble's members, on the val
phase: every width of the grid (0 ms, no smoothing, included, so the chosen one never scores below
the raw ensemble on val) is scored on the val held-out spikes, and the best is applied to every rate
tensor of both phases. Trial bins and forward bins are smoothed as one sequence, so the forward
prediction continues the trial's rates. README, "The demo", has the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import EnsembleError
from ..rates import RATE_KEYS

SD_GRID_MS = (0, 10, 15, 20, 25, 30, 40)  # the widths tried: 0 to two 20 ms bins
LOG_FLOOR = 1e-9  # rates at or below this are taken as this before the log


@dataclass(frozen=True)
class RateSmoothing:
    sd_ms: float  # the Gaussian's sd; 0 = none
    bin_ms: int
    val_co_bps: dict = field(default_factory=dict)  # {sd_ms: val co-bps of the smoothed ensemble}

    @property
    def sd_bins(self) -> float:
        return self.sd_ms / self.bin_ms

    @property
    def chosen_by(self) -> str:
        return "val co-bps" if len(self.val_co_bps) > 1 else "--smooth-ms"

    def to_json(self) -> dict:
        return {"sd_ms": self.sd_ms, "bin_ms": self.bin_ms, "sd_bins": self.sd_bins, "over": "log rates",
                "chosen_by": self.chosen_by,
                "val_co_bps_by_sd_ms": {f"{k:g}": v for k, v in self.val_co_bps.items()}}

    @classmethod
    def from_json(cls, record: dict | None, where: str = "ensemble.json") -> "RateSmoothing":
        """The smoothing an ensemble.json records; none (sd 0) when it records none (older files)."""
        if not record:
            return NO_SMOOTHING
        try:
            sd_ms, bin_ms = float(record["sd_ms"]), int(record["bin_ms"])
        except (KeyError, TypeError, ValueError) as err:
            raise EnsembleError(f"{where}: 'smoothing' needs numeric sd_ms and bin_ms, found {record!r}") from err
        if sd_ms < 0 or bin_ms < 1:
            raise EnsembleError(f"{where}: 'smoothing' has sd_ms {sd_ms} and bin_ms {bin_ms}; need sd >= 0, bin >= 1")
        return cls(sd_ms, bin_ms)


NO_SMOOTHING = RateSmoothing(0.0, 1)


def smooth_log_rates(rates: np.ndarray, sd_bins: float) -> np.ndarray:
    """[trials, bins, neurons] rates smoothed along bins in the log domain (edge bins repeated)."""
    from scipy.ndimage import gaussian_filter1d

    if sd_bins <= 0:
        return rates
    log = np.log(np.maximum(np.asarray(rates, dtype=np.float64), LOG_FLOOR))
    return np.exp(gaussian_filter1d(log, sd_bins, axis=1, mode="nearest", truncate=3.0)).astype(rates.dtype)


def _smooth_trial_and_forward(trial: np.ndarray, forward: np.ndarray, sd_bins: float) -> tuple[np.ndarray, np.ndarray]:
    """Eval rates of the trial bins and the forward bins smoothed as one sequence, split back."""
    both = smooth_log_rates(np.concatenate([trial, forward], axis=1), sd_bins)
    return both[:, :trial.shape[1]], both[:, trial.shape[1]:]


def smooth_rates(rates: dict, sd_bins: float) -> dict:
    """The six rate tensors of one dataset key, each smoothed; eval trial and forward bins as one sequence."""
    if sd_bins <= 0:
        return dict(rates)
    missing = [k for k in RATE_KEYS if k not in rates]
    if missing:
        raise EnsembleError(f"cannot smooth rates that lack {', '.join(missing)}")
    out = dict(rates)
    for key in ("train_rates_heldin", "train_rates_heldout"):
        out[key] = smooth_log_rates(rates[key], sd_bins)
    for part in ("heldin", "heldout"):
        out[f"eval_rates_{part}"], out[f"eval_rates_{part}_forward"] = _smooth_trial_and_forward(
            rates[f"eval_rates_{part}"], rates[f"eval_rates_{part}_forward"], sd_bins)
    return out


def choose_smoothing(val_rates: dict, spikes_heldout: np.ndarray, bin_ms: int,
                     grid_ms=SD_GRID_MS) -> RateSmoothing:
    """The grid's width whose smoothed val held-out rates score the highest co-bps (ties: the narrower)."""
    from ..scoring import co_bps

    if bin_ms < 1:
        raise EnsembleError(f"bin size {bin_ms} ms: must be at least 1")
    trial, forward = val_rates["eval_rates_heldout"], val_rates["eval_rates_heldout_forward"]
    scores = {}
    for sd_ms in sorted(set(float(g) for g in grid_ms)):
        scores[sd_ms] = co_bps(_smooth_trial_and_forward(trial, forward, sd_ms / bin_ms)[0], spikes_heldout)
    best = max(scores, key=lambda k: (np.nan_to_num(scores[k], nan=-np.inf), -k))
    return RateSmoothing(best, bin_ms, scores)
