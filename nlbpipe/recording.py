"""One NLB NWB file read the way nlb_tools' ``NWBDataset.load`` reads it, minus the 1 ms frame.

nlb_tools puts the whole session into a pandas frame at 1 ms (float16 spikes for every unit, every
behaviour channel) before it cuts a single trial window; for mc_maze that frame alone is gigabytes.
Here the same facts are kept in the form the windows need: spike times as 1 ms positions per unit,
the 1 ms positions where a column of that frame would be NaN, and (on request) one behaviour
signal. Every rule is nlb_tools' own, so windows cut from a ``Recording`` equal nlb_tools' windows:

* the 1 ms grid runs from 0 to the last ``obs_intervals`` end (``n_ms`` positions);
* a spike at ``t`` s lands at position ``int(round(t * 1000, 6))``; spikes at positions outside the
  first unit's ``obs_intervals`` of its group (held-in or held-out) are lost, those positions are NaN;
* a behaviour row at ``t`` lands at position ``round(t * 1000)``; positions without a row are NaN
  (the DANDI maze files record behaviour only inside trials); a series whose timestamps are off
  the grid is dropped, as nlb_tools drops it;
* units are ordered by id within a group (nlb_tools sorts its columns).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

RATE_HZ = 1000.0  # nlb_tools loads every file at 1 ms
READ_ROWS = 1 << 20  # behaviour rows read per chunk when only their NaN positions are needed


@dataclass
class SpikeGroup:
    """Held-in or held-out units: where their spikes fall on the 1 ms grid."""

    unit_ids: np.ndarray
    spike_ms: list[np.ndarray]  # per unit, sorted 1 ms positions of the spikes nlb_tools keeps
    nan_ms: np.ndarray  # bool over the grid: outside the group's observation intervals

    @property
    def n_units(self) -> int:
        return len(self.unit_ids)


@dataclass
class Signal:
    """A behaviour time series: its rows' grid positions and, when read, its values."""

    name: str
    positions: np.ndarray  # int 1 ms positions of the rows
    values: np.ndarray | None  # [rows, channels] in the file's dtype, or None when not read
    dtype: np.dtype
    n_channels: int


@dataclass
class Recording:
    path: Path
    trial_info: pd.DataFrame  # nlb_tools' trial_info (times as Timedelta)
    n_ms: int  # length of the 1 ms grid
    groups: dict[str, SpikeGroup]  # "spikes" / "heldout_spikes", as nlb_tools names them
    signals: dict[str, Signal] = field(default_factory=dict)
    nan_row_ms: np.ndarray | None = None  # bool over the grid: some column of nlb_tools' frame is NaN


def trial_info_frame(nwbfile) -> pd.DataFrame:
    """``trial_info`` exactly as ``NWBDataset.load`` builds it (ids, renamed stop, Timedelta times)."""
    trial_info = (nwbfile.trials.to_dataframe().reset_index()
                  .rename({"id": "trial_id", "stop_time": "end_time"}, axis=1))

    def to_td(x):
        return pd.to_timedelta(x, unit="s") if x.name.endswith("_time") else x

    return trial_info.apply(to_td, axis=0)


def _ragged(table, name: str) -> list[np.ndarray]:
    col = table[name]
    flat = np.asarray(col.target.data[:])
    ends = np.asarray(col.data[:], dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    return [flat[a:b] for a, b in zip(starts, ends)]


def _grid_length(obs: list[np.ndarray] | None, trial_info_raw_end: float) -> int:
    """``NWBDataset.load``'s ``end_time`` (ms), including its ms-versus-seconds comparison."""
    end_time = round(max(o[-1][-1] for o in obs) * RATE_HZ) if obs else 0
    if end_time < trial_info_raw_end:
        end_time = round(trial_info_raw_end * RATE_HZ)
    return int(end_time)


def _nan_mask(obs_intervals: np.ndarray | None, n_ms: int) -> np.ndarray:
    mask = np.ones(n_ms, dtype=bool)
    if obs_intervals is None:
        return np.zeros(n_ms, dtype=bool)
    for start, end in np.asarray(obs_intervals).reshape(-1, 2):
        a = int(np.ceil(round(start * RATE_HZ, 6)))
        b = int(np.floor(round(end * RATE_HZ, 6)))
        mask[a:b] = False  # nlb_tools' slice, negative starts and all
    return mask


def _spike_group(ids, trains, obs, sel: np.ndarray, n_ms: int) -> SpikeGroup | None:
    idx = np.flatnonzero(sel)
    if idx.size == 0:
        return None
    nan_ms = _nan_mask(obs[idx[0]] if obs is not None else None, n_ms)
    idx = idx[np.argsort(ids[idx], kind="stable")]
    spike_ms = []
    for i in idx:
        pos = (np.asarray(trains[i], dtype=np.float64) * RATE_HZ).round(6).astype(int)
        pos = pos[(pos >= 0) & (pos < n_ms)]
        spike_ms.append(np.sort(pos[~nan_ms[pos]]))
    return SpikeGroup(ids[idx], spike_ms, nan_ms)


def _timeseries(nwbfile) -> dict:
    """The TimeSeries ``NWBDataset.load`` finds, under the names it gives them."""
    from pynwb import ProcessingModule, TimeSeries
    from pynwb.core import MultiContainerInterface

    found = {}

    def walk(obj):
        for child in obj.children:
            if isinstance(child, TimeSeries):
                found[child.name] = child
            elif isinstance(child, ProcessingModule):
                walk(child)
            elif isinstance(child, MultiContainerInterface):
                for ts in child.children:
                    if isinstance(ts, TimeSeries):
                        found[child.name + "_" + ts.name] = ts

    walk(nwbfile)
    return found


def _positions(ts, n_ms: int) -> np.ndarray | None:
    """Grid positions of a series' rows, or None when nlb_tools would drop it (off the grid)."""
    if ts.timestamps is not None:
        t = np.asarray(ts.timestamps[()], dtype=np.float64)
    else:
        t = np.arange(ts.data.shape[0]) / ts.rate + ts.starting_time
    t6 = np.round(t, 6)
    pos = np.rint(t6 * RATE_HZ).astype(np.int64)
    ok = (pos >= 0) & (pos < n_ms) & (np.round(pos / RATE_HZ, 6) == t6)
    return pos if ok.all() else None


def _mark_nan_rows(nan_row: np.ndarray, ts, pos: np.ndarray) -> None:
    recorded = np.zeros(nan_row.shape[0], dtype=bool)
    for a in range(0, len(pos), READ_ROWS):
        block = np.asarray(ts.data[a:a + READ_ROWS])
        block = block.reshape(block.shape[0], -1)
        good = ~np.isnan(block).any(axis=1) if np.issubdtype(block.dtype, np.floating) else True
        recorded[pos[a:a + READ_ROWS][good]] = True
    nan_row |= ~recorded


def read_recording(path: Path, behavior_field: str | None = None) -> Recording:
    """Trials, spikes (both groups), the NaN-row mask and, if named, one behaviour signal."""
    from pynwb import NWBHDF5IO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        io = NWBHDF5IO(str(path), "r")
        nwbfile = io.read()
    try:
        raw_end = float(nwbfile.trials["stop_time"].data[-1])
        trial_info = trial_info_frame(nwbfile)
        units = nwbfile.units
        ids = np.asarray(units.id.data[:])
        trains = _ragged(units, "spike_times")
        obs = None
        if "obs_intervals" in units.colnames:
            obs = [np.asarray(o).reshape(-1, 2) for o in _ragged(units, "obs_intervals")]
        n_ms = _grid_length(obs, raw_end)
        heldout = np.asarray(units["heldout"].data[:], dtype=bool)
        groups = {}
        for name, sel in (("spikes", ~heldout), ("heldout_spikes", heldout)):
            group = _spike_group(ids, trains, obs, sel, n_ms)
            if group is not None:
                groups[name] = group
        del trains
        nan_row = np.zeros(n_ms, dtype=bool)
        for group in groups.values():
            nan_row |= group.nan_ms
        signals = {}
        for name, ts in _timeseries(nwbfile).items():
            pos = _positions(ts, n_ms)
            if pos is None:
                continue
            _mark_nan_rows(nan_row, ts, pos)
            shape = ts.data.shape
            n_ch = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            values = None
            if name == behavior_field:
                values = np.asarray(ts.data[()]).reshape(shape[0], n_ch)
            signals[name] = Signal(name, pos, values, np.dtype(ts.data.dtype), n_ch)
    finally:
        io.close()
    return Recording(Path(path), trial_info, n_ms, groups, signals, nan_row)


def _block_starts(recs: list[Recording]) -> list[int]:
    """Where ``NWBDataset`` puts each file (ms) when it stacks several into one recording."""
    starts, past_end = [0], (recs[0].n_ms - 1) / RATE_HZ + round(50 / RATE_HZ, 4)
    for rec in recs[1:]:
        start = int(np.ceil(past_end * 10) * 100)
        starts.append(start)
        past_end = (start + rec.n_ms - 1) / RATE_HZ + round(50 / RATE_HZ, 4)
    return starts


def _shift_trials(ti: pd.DataFrame, shift_ms: int, trial_offset: int) -> pd.DataFrame:
    ti = ti.copy()
    for col in ti.columns:
        if col.endswith("_time"):
            ti[col] = ti[col] + pd.to_timedelta(shift_ms, unit="ms")
        elif col == "trial_id":
            ti[col] = ti[col] + trial_offset
    return ti


def stack_recordings(recs: list[Recording]) -> Recording:
    """Files in name order as one recording, the way ``NWBDataset(folder, prefix)`` stacks them.

    Each file starts on the next 100 ms after the previous one's end plus 50 ms; the grid between
    files is NaN, as is a group (held-out units) in a file without it. Behaviour values are not
    carried (only the test phase stacks files, and it decodes nothing).
    """
    starts = _block_starts(recs)
    n_ms = starts[-1] + recs[-1].n_ms
    offsets = np.cumsum([0] + [len(r.trial_info) for r in recs[:-1]])
    trial_info = pd.concat([_shift_trials(r.trial_info, s, int(o)) for r, s, o in zip(recs, starts, offsets)],
                           axis=0, join="outer").reset_index(drop=True)
    nan_row = np.ones(n_ms, dtype=bool)
    groups = {}
    for name in dict.fromkeys(k for r in recs for k in r.groups):
        present = [r.groups[name] for r in recs if name in r.groups]
        ids = present[0].unit_ids
        if any(not np.array_equal(g.unit_ids, ids) for g in present):
            raise ValueError(f"{name}: the files hold different units; nlbpipe stacks only files "
                             "with the same units")
        nan_ms = np.ones(n_ms, dtype=bool)
        spike_ms = [[] for _ in ids]
        for rec, s in zip(recs, starts):
            g = rec.groups.get(name)
            if g is None:
                continue
            nan_ms[s:s + rec.n_ms] = g.nan_ms
            for u, pos in enumerate(g.spike_ms):
                spike_ms[u].append(pos + s)
        groups[name] = SpikeGroup(ids, [np.concatenate(p) for p in spike_ms], nan_ms)
    for rec, s in zip(recs, starts):
        row = rec.nan_row_ms.copy()
        for name in groups:
            if name not in rec.groups:
                row[:] = True
        nan_row[s:s + rec.n_ms] = row
    for name in dict.fromkeys(k for r in recs for k in r.signals):  # a series one file lacks
        for rec, s in zip(recs, starts):
            if name not in rec.signals:
                nan_row[s:s + rec.n_ms] = True
    return Recording(recs[-1].path, trial_info, n_ms, groups, {}, nan_row)
