"""The nlb_tools reference smoothing baseline: the floor any model must clear.

Held-in rates are the Gaussian-smoothed held-in spikes; held-out rates come from a Poisson GLM
(sklearn ``PoissonRegressor``) fit on the train trials from log smoothed held-in spikes to held-out
spikes, as in nlb_tools' ``examples/baselines/smoothing/run_smoothing.py`` (solved with sklearn's
``newton-cholesky`` solver: the same convex objective as its default lbfgs, reached ~8x faster). That script makes no
forward predictions; here the forward rates are each neuron's mean count per bin over the train
trials' forward windows (a flat prior: fp-bps near 0, the floor), so a submission has all six
tensors. (Holding each trial's last smoothed rate forward scored far worse: 5 ms bins are noisy.)
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.signal as signal

from .datasets import resolve
from .tensors import load_tensors

# nlb_tools' tuned [kern_sd_ms, alpha] per dataset (run_smoothing.py default_dict)
DEFAULTS = {
    "mc_maze": (50, 0.01),
    "mc_rtt": (30, 0.1),
    "area2_bump": (30, 0.01),
    "dmfc_rsg": (60, 0.001),
    "mc_maze_large": (40, 0.1),
    "mc_maze_medium": (60, 0.1),
    "mc_maze_small": (60, 0.1),
}
LOG_OFFSET = 1e-4


def smooth_spikes(spikes: np.ndarray, kern_sd_ms: float, bin_ms: int) -> np.ndarray:
    """Gaussian-smooth ``[trials, bins, neurons]`` along bins (nlb_tools' kernel; NaN -> 0)."""
    sd = kern_sd_ms / bin_ms
    window = signal.windows.gaussian(max(int(6 * sd), 1), sd, sym=True)
    window /= window.sum()
    x = np.nan_to_num(spikes.astype(np.float64))
    return np.apply_along_axis(lambda v: np.convolve(v, window, "same"), 1, x)


def _fit_poisson(train_x, eval_x, train_y, alpha):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import PoissonRegressor

    train_pred, eval_pred = [], []
    for n in range(train_y.shape[1]):
        max_iter = 500
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = PoissonRegressor(alpha=alpha, max_iter=max_iter, solver="newton-cholesky")
                model.fit(train_x, train_y[:, n])
            if model.n_iter_ < max_iter or max_iter >= 10000:
                break
            max_iter *= 5
        train_pred.append(model.predict(train_x))
        eval_pred.append(model.predict(eval_x))
    clip = lambda p: np.clip(np.stack(p, axis=1), 1e-9, 1e20)
    return clip(train_pred), clip(eval_pred)


def _flat_forward(train_forward: np.ndarray, n_eval: int) -> np.ndarray:
    """Each neuron's mean count per bin over the train trials' forward windows, for every eval trial."""
    mean = np.nanmean(train_forward, axis=(0, 1), keepdims=True)
    return np.broadcast_to(np.maximum(mean, 1e-9), (n_eval,) + train_forward.shape[1:]).copy()


def smoothing_rates(dataset_key, phase="val", raw_dir=None, cache_dir=None, kern_sd_ms=None,
                    alpha=None) -> dict:
    """The six ``RATE_KEYS`` tensors of the smoothing baseline (float32, counts per bin)."""
    info, bin_ms = resolve(dataset_key)
    default_sd, default_alpha = DEFAULTS[info.name]
    kern_sd_ms = default_sd if kern_sd_ms is None else kern_sd_ms
    alpha = default_alpha if alpha is None else alpha
    t = load_tensors(dataset_key, phase, raw_dir=raw_dir, cache_dir=cache_dir)
    train_in, train_out, eval_in = t["train_spikes_heldin"], t["train_spikes_heldout"], t["eval_spikes_heldin"]
    n_bins, n_out = train_in.shape[1], train_out.shape[2]
    train_smooth = smooth_spikes(train_in, kern_sd_ms, bin_ms)
    eval_smooth = smooth_spikes(eval_in, kern_sd_ms, bin_ms)
    flat = lambda x: x.reshape(-1, x.shape[2])
    train_pred, eval_pred = _fit_poisson(
        np.log(flat(train_smooth) + LOG_OFFSET), np.log(flat(eval_smooth) + LOG_OFFSET),
        np.nan_to_num(flat(train_out)), alpha)
    eval_out = eval_pred.reshape(-1, n_bins, n_out)
    n_eval = eval_in.shape[0]
    rates = {
        "train_rates_heldin": train_smooth,
        "train_rates_heldout": train_pred.reshape(-1, n_bins, n_out),
        "eval_rates_heldin": eval_smooth,
        "eval_rates_heldout": eval_out,
        "eval_rates_heldin_forward": _flat_forward(t["train_spikes_heldin_forward"], n_eval),
        "eval_rates_heldout_forward": _flat_forward(t["train_spikes_heldout_forward"], n_eval),
    }
    return {k: np.asarray(v, dtype=np.float32) for k, v in rates.items()}
