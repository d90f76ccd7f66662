"""Copies of an NWB file with one thing taken out (a unit, a trial field), made by hand with pynwb."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import numpy as np


def copy_without(src: Path, dst: Path, drop_unit: int | None = None, drop_trial_field: str | None = None) -> Path:
    """``src`` copied to ``dst`` (units, trials, behaviour series) less one unit id or one trial column."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        io = NWBHDF5IO(str(src), "r")
        nwb = io.read()
    try:
        out = NWBFile(session_description=nwb.session_description, identifier=nwb.identifier + "-edited",
                      session_start_time=dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc))
        trials = nwb.trials.to_dataframe()
        if drop_trial_field is not None:
            trials = trials.drop(columns=[drop_trial_field])
        for col in trials.columns:
            if col not in ("start_time", "stop_time"):
                out.add_trial_column(name=col, description=col)
        for rec in trials.to_dict("records"):
            out.add_trial(**rec)
        out.add_unit_column(name="heldout", description="held-out unit")
        for uid, row in nwb.units.to_dataframe().iterrows():
            if uid == drop_unit:
                continue
            out.add_unit(id=int(uid), spike_times=np.asarray(row.spike_times),
                         obs_intervals=np.asarray(row.obs_intervals).tolist(), heldout=bool(row.heldout))
        if "behavior" in nwb.processing:
            module = out.create_processing_module("behavior", "behaviour")
            for name, ts in nwb.processing["behavior"].data_interfaces.items():
                kw = ({"timestamps": np.asarray(ts.timestamps[()])} if ts.timestamps is not None
                      else {"rate": ts.rate, "starting_time": ts.starting_time})
                module.add(TimeSeries(name=name, data=np.asarray(ts.data[()]), unit=ts.unit, **kw))
    finally:
        io.close()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with NWBHDF5IO(str(dst), "w") as wio:
        wio.write(out)
    return dst
