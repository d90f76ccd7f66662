"""Trial windows cut from a ``Recording``: nlb_tools' ``make_trial_data`` rules, one window at a time.

A window is the run of bins (at ``bin_ms``) that ``NWBDataset.make_trial_data`` would slice for one
trial: start ``align + range[0]`` (or the start field), end ``align + range[1] - 1 us`` (or the end
field), shortened at the next trial's start unless overlap is allowed, clipped to the recording,
and, unless NaNs are allowed, without the bins where any column of nlb_tools' frame is NaN. Spikes
are counted and behaviour decimated only inside the windows, so memory follows the windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .recording import Recording

US = 1000  # ns: nlb_tools ends windows 1 us early so .loc slicing excludes the end
DECIMATE_TAPS = 501  # nlb_tools resamples behaviour with decimate(n=500, ftype="fir")


@dataclass
class Windows:
    """One row per trial that ``make_trial_data`` keeps, in its order."""

    trial_ids: np.ndarray
    rows: np.ndarray  # trial_info index labels
    bins: list[np.ndarray]  # per trial, the bin indices it holds
    align_bin: np.ndarray  # bin of the alignment time (ceil), for nlb_tools' align_time
    bin_ms: int

    def __len__(self) -> int:
        return len(self.trial_ids)


def _offset_ns(value_ms) -> int | None:
    return None if value_ms is None else int(pd.to_timedelta(value_ms, unit="ms").value)


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def trial_windows(rec: Recording, bin_ms: int, include: np.ndarray, *, start_field="start_time",
                  end_field="end_time", align_field=None, align_range=(None, None),
                  allow_overlap=False, allow_nans=False) -> Windows:
    """The windows ``make_trial_data(ignored_trials=~include, ...)`` cuts (margin 0)."""
    ti = rec.trial_info
    bin_ns = int(bin_ms * 1_000_000)
    n_bins = grid_bins(rec, bin_ms)
    next_start = ti["start_time"].shift(-1)
    sel = np.asarray(include, dtype=bool)
    ti, next_start = ti.loc[sel], next_start.loc[sel]
    trial_start, trial_end = ti[start_field], ti[end_field]
    align_left = ti[align_field] if align_field is not None else trial_start
    align_right = ti[align_field] if align_field is not None else trial_end
    lo, hi = align_range
    lo_ns, hi_ns = _offset_ns(lo), _offset_ns(hi)
    if lo_ns is not None and hi_ns is not None and (hi_ns - lo_ns) % bin_ns:
        hi_ns = lo_ns + int(pd.Timedelta(hi_ns - lo_ns).round(pd.Timedelta(bin_ns)).value)
    align_start = trial_start if lo_ns is None else align_left + pd.Timedelta(lo_ns)
    align_end = (trial_end if hi_ns is None else align_right + pd.Timedelta(hi_ns)) - pd.Timedelta(US)
    frame = pd.DataFrame({"trial_id": ti["trial_id"], "align_start": align_start, "align_end": align_end,
                          "trial_start": trial_start, "align_left": align_left}).dropna()
    # nlb_tools shifts before its dropna: a trial is bounded by the next included trial
    bound = pd.concat([next_start, align_start], axis=1).min(axis=1).shift(-1).loc[frame.index]
    starts = frame.align_start.to_numpy(dtype="timedelta64[ns]").astype(np.int64)
    ends = frame.align_end.to_numpy(dtype="timedelta64[ns]").astype(np.int64)
    lefts = frame.align_left.to_numpy(dtype="timedelta64[ns]").astype(np.int64)
    bound_ok = bound.notna().to_numpy()
    bounds = bound.fillna(pd.Timedelta(0)).to_numpy(dtype="timedelta64[ns]").astype(np.int64)
    nan_bins = None if allow_nans else _nan_row_bins(rec, bin_ms, n_bins)
    bins = []
    for i in range(len(frame)):
        end = ends[i]
        if bound_ok[i] and end > bounds[i] and not allow_overlap:
            end = bounds[i] - US
        first = max(_ceil_div(int(starts[i]), bin_ns), 0)
        last = min(int(end) // bin_ns, n_bins - 1)
        b = np.arange(first, last + 1, dtype=np.int64)
        if nan_bins is not None:
            b = b[~nan_bins[b]]
        bins.append(b)
    align_bin = np.array([_ceil_div(int(v), bin_ns) for v in lefts], dtype=np.int64)
    return Windows(frame.trial_id.to_numpy(), frame.index.to_numpy(), bins, align_bin, int(bin_ms))


def _nan_row_bins(rec: Recording, bin_ms: int, n_bins: int) -> np.ndarray:
    """Bins whose row holds a NaN after nlb_tools' resample: its first 1 ms position is NaN."""
    pos = np.arange(n_bins, dtype=np.int64) * int(bin_ms)
    return rec.nan_row_ms[pos]


def count_spikes(rec: Recording, group: str, windows: Windows) -> list[np.ndarray]:
    """Per trial, ``[bins, units]`` float16 counts, NaN where the group is unobserved (nlb_tools' rebin)."""
    g = rec.groups[group]
    f = windows.bin_ms
    flat = np.concatenate(windows.bins) if windows.bins else np.zeros(0, np.int64)
    used, inverse = np.unique(flat, return_inverse=True)
    counts = np.zeros((len(used), g.n_units), dtype=np.float16)
    for u, pos in enumerate(g.spike_ms):
        b = pos // f
        p = np.searchsorted(used, b)
        ok = p < len(used)
        ok[ok] = used[p[ok]] == b[ok]
        counts[:, u] = np.bincount(p[ok], minlength=len(used))
    nan = g.nan_ms[used * f]
    counts[nan] = np.nan
    out = counts[inverse]
    splits = np.cumsum([len(b) for b in windows.bins])[:-1]
    return np.split(out, splits)


def stack(per_trial: list[np.ndarray], what: str) -> np.ndarray:
    """``make_stacked_array``'s ``np.stack``; unequal windows name the field instead of a traceback."""
    lengths = {a.shape[0] for a in per_trial}
    if len(lengths) > 1:
        raise ValueError(f"{what}: trial windows of unequal length {sorted(lengths)} (nlb_tools cannot "
                         "stack them either: windows run past the recording or into NaN data)")
    return np.stack(per_trial)


def jagged(per_trial: list[np.ndarray], n_channels: int, jitter_bins=None, pad="back",
           max_len: int | None = None) -> np.ndarray:
    """``make_jagged_array``: NaN-padded ``[trials, max_len, channels]``, shifted by jitter."""
    if max_len is None:
        max_len = max(a.shape[0] for a in per_trial)
    arr = np.full((len(per_trial), max_len, n_channels), np.nan)
    jit_all = np.zeros(len(per_trial), dtype=int) if jitter_bins is None else jitter_bins
    for i, data in enumerate(per_trial):
        jit = int(jit_all[i])
        if pad == "front":
            if jit == 0:
                data = data[-max_len:]
                arr[i, -data.shape[0]:, :] = data
            elif jit > 0:
                data = data[-(max_len - jit):]
                arr[i, -(data.shape[0] + jit):-jit, :] = data
            else:
                data = data[-(max_len - jit):jit]
                arr[i, -data.shape[0]:, :] = data
        else:
            if jit == 0:
                data = data[:max_len]
                arr[i, :data.shape[0], :] = data
            if jit > 0:
                data = data[jit:(max_len + jit)]
                arr[i, :data.shape[0], :] = data
            else:
                data = data[:(max_len - jit)]
                arr[i, -jit:(data.shape[0] - jit)] = data
    return arr


def _decimation_filter(factor: int) -> np.ndarray:
    from scipy.signal import firwin

    return firwin(DECIMATE_TAPS, 1.0 / factor, window="hamming")


def behavior_windows(rec: Recording, name: str, windows: Windows) -> list[np.ndarray]:
    """Per trial, the behaviour nlb_tools' ``resample`` gives in the window's bins.

    nlb_tools fills NaNs by linear interpolation over the whole session (ends held), decimates
    with a zero-phase 501-tap FIR (zero padding at the session's ends) and puts the NaNs back;
    each output bin needs only 250 ms either side, so only that is rebuilt.
    """
    from scipy.signal import resample_poly

    sig = rec.signals[name]
    f = windows.bin_ms
    n_ms = rec.n_ms
    half = (DECIMATE_TAPS - 1) // 2
    h = _decimation_filter(f) if f > 1 else None
    filled = _Filled(sig, n_ms)
    out = []
    for b in windows.bins:
        if len(b) == 0:
            out.append(np.zeros((0, sig.n_channels), dtype=sig.dtype))
            continue
        if h is None:
            vals = filled.values(int(b[0]), int(b[-1]) + 1)
            lo = int(b[0])
        else:  # scipy's own resample_poly on a span starting on a bin edge: the same arithmetic
            margin = -(-half // f) + 1
            lo, hi = int(b[0]) - margin, int(b[-1]) + margin + 1
            x = filled.values(lo * f, hi * f).astype(sig.dtype)
            vals = resample_poly(x, 1, f, axis=0, window=h.astype(x.dtype))
        vals = vals[b - lo]
        vals[filled.missing(b * f)] = np.nan
        out.append(vals.astype(sig.dtype))
    return out


class _Filled:
    """A behaviour signal on the 1 ms grid with NaNs interpolated as pandas does, zero off the grid."""

    def __init__(self, sig, n_ms: int):
        self.n_ms = n_ms
        pos, vals = sig.positions, sig.values.astype(np.float64)
        self.dtype = sig.dtype
        self.knots = []
        self.has_nan = []
        increasing = len(pos) < 2 or bool((np.diff(pos) > 0).all())  # then every position is distinct
        grid_has_nan = (len(pos) if increasing else len(np.unique(pos))) < n_ms
        self.recorded = [np.zeros(n_ms, bool) for _ in range(vals.shape[1])]
        for c in range(vals.shape[1]):
            good = ~np.isnan(vals[:, c])
            order = np.argsort(pos[good], kind="stable")
            knot_pos = pos[good][order]
            self.recorded[c][knot_pos] = True
            # float positions once: np.interp would convert the whole session's on every call
            self.knots.append((knot_pos.astype(np.float64), vals[good, c][order]))
            self.has_nan.append(grid_has_nan or not good.all())
        self.any_nan = any(self.has_nan)

    def values(self, a: int, b: int) -> np.ndarray:
        """Grid positions ``[a, b)``: interpolated (if the session has NaNs), zero off the grid."""
        q = np.arange(a, b)
        inside = (q >= 0) & (q < self.n_ms)
        x = np.zeros((len(q), len(self.knots)))
        for c, (kp, kv) in enumerate(self.knots):
            if self.any_nan:
                # pandas fills NaNs only; the fill is cast back to the column's dtype. Only the knots
                # bracketing [a, b) take part (the same result as the whole session's, far cheaper).
                lo = max(int(np.searchsorted(kp, a, side="right")) - 1, 0)
                hi = int(np.searchsorted(kp, b - 1, side="left")) + 1
                x[inside, c] = np.interp(q[inside], kp[lo:hi], kv[lo:hi]).astype(self.dtype)
            else:
                x[inside, c] = kv[q[inside]]
        return x

    def missing(self, positions: np.ndarray) -> np.ndarray:
        """``[len(positions), channels]``: NaN in nlb_tools' 1 ms frame at these positions."""
        inside = (positions >= 0) & (positions < self.n_ms)
        out = np.ones((len(positions), len(self.knots)), dtype=bool)
        for c in range(len(self.knots)):
            out[inside, c] = ~self.recorded[c][positions[inside]]
        return out


def grid_bins(rec: Recording, bin_ms: int) -> int:
    """How many bins nlb_tools' resampled frame has (the last one may be partial)."""
    return -(-rec.n_ms // int(bin_ms))

