"""Condition-averaged PSTHs of smoothed spikes, as nlb_tools' ``_make_psth`` makes them, per window.

nlb_tools reloads the whole file at 1 ms, smooths every unit over the whole session (a Gaussian of
``kern_sd`` ms, 6 sd wide, convolved "same" within each NaN-free stretch, rectified when the column
has NaNs), re-bins by summing and averages the trials of each condition by ``align_time``. The
smoothed value in a bin depends only on spikes within half a kernel of it, in the same NaN-free
stretch, so here only the 1 ms spans the windows need (plus that margin) are ever smoothed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .recording import Recording, SpikeGroup
from .windows import Windows, trial_windows

GROUPS = ("spikes", "heldout_spikes")


@dataclass
class PSTHResult:
    train_cond_idx: np.ndarray  # object array: per condition, indices among the train trials
    eval_cond_idx: np.ndarray
    psth: np.ndarray  # [conditions, bins, held-in + held-out units]
    conditions: list


def gaussian_kernel(kern_sd_ms: float) -> np.ndarray:
    """``smooth_spk``'s kernel at 1 ms: ``int(6 sd)`` taps, symmetric, summing to one."""
    from scipy.signal.windows import gaussian

    window = gaussian(int(6 * kern_sd_ms), kern_sd_ms, sym=True)
    return window / np.sum(window)


def _runs(nan_ms: np.ndarray) -> np.ndarray:
    """``[start, stop)`` of the NaN-free stretches of the grid, as ``[n, 2]``."""
    edges = np.diff(np.concatenate([[1], nan_ms.view(np.int8), [1]]))
    return np.stack([np.flatnonzero(edges == -1), np.flatnonzero(edges == 1)], axis=1)


def _merge(spans: np.ndarray) -> np.ndarray:
    spans = spans[np.argsort(spans[:, 0], kind="stable")]
    out = []
    for a, b in spans:
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return np.array(out, dtype=np.int64).reshape(-1, 2)


class _Smoother:
    """Smoothed 1 ms spikes of one group, computed on demand for spans of the grid."""

    def __init__(self, group: SpikeGroup, kernel: np.ndarray):
        self.kernel = kernel
        self.c = (len(kernel) - 1) // 2  # "same" keeps the full convolution from here
        self.runs = _runs(group.nan_ms)
        self.rectify = bool(group.nan_ms.any())  # smooth_column rectifies only columns with NaNs
        self.n_units = group.n_units
        lengths = [len(p) for p in group.spike_ms]
        self.pos = np.concatenate(group.spike_ms) if lengths else np.zeros(0, np.int64)
        self.unit = np.repeat(np.arange(len(lengths)), lengths)
        order = np.argsort(self.pos, kind="stable")
        self.pos, self.unit = self.pos[order], self.unit[order]

    def span(self, a: int, b: int) -> np.ndarray:
        """``[b - a, units]`` smoothed values for grid positions ``[a, b)`` (0 where NaN)."""
        from scipy.signal import fftconvolve

        out = np.zeros((b - a, self.n_units))
        m = len(self.kernel)
        first = np.searchsorted(self.runs[:, 1], a, side="right")
        for r0, r1 in self.runs[first:]:
            if r0 >= b:
                break
            o0, o1 = max(r0, a), min(r1, b)
            s0, s1 = max(r0, o0 - (m - 1 - self.c)), min(r1, o1 + self.c)
            x = np.zeros((s1 - s0, self.n_units))
            lo, hi = np.searchsorted(self.pos, [s0, s1])
            np.add.at(x, (self.pos[lo:hi] - s0, self.unit[lo:hi]), 1.0)
            full = fftconvolve(x, self.kernel[:, None], mode="full", axes=0)
            y = full[o0 + self.c - s0:o1 + self.c - s0]
            if self.rectify:
                y[y < 0] = 0
            out[o0 - a:o1 - a] = y
        return out


def smoothed_windows(rec: Recording, smoothers: dict, windows: Windows) -> list[np.ndarray]:
    """Per trial, ``[bins, held-in + held-out]`` smoothed spikes summed into bins, NaN unobserved."""
    f = windows.bin_ms
    flat = np.concatenate(windows.bins) if windows.bins else np.zeros(0, np.int64)
    used, inverse = np.unique(flat, return_inverse=True)
    spans = _merge(np.stack([used * f, np.minimum((used + 1) * f, rec.n_ms)], axis=1))
    parts = []
    for name in GROUPS:
        sm, g = smoothers[name], rec.groups[name]
        vals = np.zeros((len(used), g.n_units))
        for a, b in spans:  # spans start on bin edges; the last bin of the grid may be partial
            seg = sm.span(int(a), int(b))
            n_seg = -(-len(seg) // f)
            seg = np.concatenate([seg, np.zeros((n_seg * f - len(seg), g.n_units))])
            sums = seg.reshape(n_seg, f, g.n_units).sum(axis=1)
            k0, k1 = np.searchsorted(used, a // f), np.searchsorted(used, a // f + n_seg)
            vals[k0:k1] = sums[used[k0:k1] - a // f]
        vals[g.nan_ms[np.minimum(used * f, rec.n_ms - 1)]] = np.nan
        parts.append(vals)
    out = np.concatenate(parts, axis=1)[inverse]
    return np.split(out, np.cumsum([len(b) for b in windows.bins])[:-1])


def _condition_psth(per_trial: list[np.ndarray], windows: Windows, pad: str):
    """Drop short trials (< 0.8 mean), average by align offset (NaN-skipping), cut to the shortest."""
    lengths = np.array([len(a) for a in per_trial])
    keep = lengths >= 0.8 * lengths.mean()
    offsets = [windows.bins[i] - windows.align_bin[i] for i in range(len(per_trial)) if keep[i]]
    data = [per_trial[i] for i in range(len(per_trial)) if keep[i]]
    all_off = np.unique(np.concatenate(offsets))
    total = np.zeros((len(all_off), data[0].shape[1]))
    count = np.zeros_like(total)
    for off, vals in zip(offsets, data):
        idx = np.searchsorted(all_off, off)
        good = ~np.isnan(vals)
        np.add.at(total, idx, np.where(good, vals, 0.0))
        np.add.at(count, idx, good)
    with np.errstate(invalid="ignore", divide="ignore"):
        psth = np.where(count > 0, total / count, np.nan)
    min_len = min(len(d) for d in data)
    psth = psth[:min_len] if pad == "back" else psth[-min_len:]
    return psth, windows.trial_ids[keep]


def make_psth(rec: Recording, bin_ms: int, train_mask, eval_mask, ignore_mask, make_params: dict,
              cond_fields, kern_sd: float, pad="back", psth_len=None, seg_len=None,
              skip_mask=None) -> PSTHResult:
    """``_make_psth``'s outputs (same arguments as nlb_tools' ``psth_params``), from windows only."""
    ti = rec.trial_info
    kernel = gaussian_kernel(kern_sd)
    smoothers = {name: _Smoother(rec.groups[name], kernel) for name in GROUPS}
    if skip_mask is not None:
        skip_mask = skip_mask(ti) if callable(skip_mask) else skip_mask
    else:
        skip_mask = np.full(len(ti), False)
    if isinstance(cond_fields, str):
        cond_fields = [cond_fields]
    combinations = sorted(ti[~ignore_mask][cond_fields].dropna().set_index(cond_fields)
                          .index.unique().tolist())
    align = make_params.get("align_field", "start_time")
    train_ids = ti[train_mask][["trial_id", align]].dropna().trial_id.to_numpy()
    eval_ids = ti[eval_mask][["trial_id", align]].dropna().trial_id.to_numpy()
    psths, train_idx, eval_idx, kept = [], [], [], []
    for comb in combinations:
        mask = np.all(ti[cond_fields] == comb, axis=1)
        if not np.any(mask & (~ignore_mask) & (~skip_mask)):
            continue
        include = np.asarray(mask & ~ignore_mask & ~skip_mask, dtype=bool)
        windows = trial_windows(rec, bin_ms, include, allow_nans=True, **make_params)
        psth, tids = _condition_psth(smoothed_windows(rec, smoothers, windows), windows, pad)
        psths.append(psth)
        train_idx.append(np.sort(np.where(np.isin(train_ids, tids))[0]))
        eval_idx.append(np.sort(np.where(np.isin(eval_ids, tids))[0]))
        kept.append(comb)
    max_len = (max(p.shape[0] for p in psths) if seg_len is None else int(round(seg_len / bin_ms)))
    stacked = np.stack([_fit(p, max_len, pad) for p in psths])
    return PSTHResult(np.array(train_idx, dtype="object"), np.array(eval_idx, dtype="object"),
                      stacked, kept)


def _fit(psth: np.ndarray, max_len: int, pad: str) -> np.ndarray:
    """nlb_tools' stacking rule, its ``psth[max_len:]`` for long front-padded PSTHs included."""
    n = psth.shape[0]
    if n == max_len:
        return psth
    if n > max_len:
        return psth[:max_len] if pad == "back" else psth[max_len:]
    fill = np.full((max_len - n, psth.shape[1]), np.nan)
    return np.concatenate([psth, fill] if pad == "back" else [fill, psth], axis=0)
