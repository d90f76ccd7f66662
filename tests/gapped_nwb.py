"""A small NWB file in the DANDI maze layout, made from a synthetic stand-in by hand.

The real mc_maze train files hold trial segments: every unit has one observation interval per trial,
spikes only inside them, and behaviour timestamps only inside trials. This copies a stand-in into
that layout, with a gap of ``gap_ms`` on each side of every trial boundary, so tests can hold the
windowed build to nlb_tools on gapped files without the issue-9 synthetic writer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nwb_edit import new_nwbfile, read_nwb, write_nwb


def _segments(trials, gap_ms: int) -> np.ndarray:
    start = trials["start_time"].to_numpy() + gap_ms / 1000.0
    stop = trials["stop_time"].to_numpy() - gap_ms / 1000.0
    return np.stack([start, stop], axis=1)


def write_gapped(src: Path, dst: Path, gap_ms: int = 30) -> Path:
    """Copy NWB ``src`` to ``dst`` with trial-segment obs_intervals, spikes and behaviour."""
    from pynwb import TimeSeries

    io, nwb = read_nwb(src)
    trials = nwb.trials.to_dataframe()
    seg = _segments(trials, gap_ms)
    units = nwb.units.to_dataframe()
    out = new_nwbfile(nwb, trials, "-gapped", " (gapped test copy)")
    for uid, row in units.iterrows():
        st = np.asarray(row.spike_times)
        inside = np.zeros(st.shape, bool)
        for a, b in seg:
            inside |= (st >= a) & (st < b)
        out.add_unit(id=int(uid), spike_times=st[inside], obs_intervals=seg.tolist(),
                     heldout=bool(row.heldout))
    if "behavior" in nwb.processing:
        module = out.create_processing_module("behavior", "behaviour inside trials only")
        for name, ts in nwb.processing["behavior"].data_interfaces.items():
            data = np.asarray(ts.data[()])
            if ts.timestamps is not None:  # a stand-in already in the DANDI layout
                t = np.asarray(ts.timestamps[()])
            else:
                t = np.arange(data.shape[0]) / ts.rate + ts.starting_time
            ms = np.round(t * 1000).astype(int)
            inside = np.zeros(ms.shape, bool)
            for a, b in np.round(seg * 1000).astype(int):
                inside |= (ms >= a) & (ms < b)
            module.add(TimeSeries(name=name, data=data[inside], timestamps=ms[inside] / 1000.0,
                                  unit=ts.unit, comments=ts.comments, description=ts.description))
    io.close()
    return write_nwb(out, dst)
