"""Copies of an NWB file with one thing taken out (a unit, a trial field), made by hand with pynwb;
``read_nwb`` / ``new_nwbfile`` / ``write_nwb`` are the steps every hand-made copy shares
(tests/gapped_nwb.py too)."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import numpy as np


def read_nwb(src: Path):
    """``(io, nwb)`` for ``src``, pynwb's warnings silenced; the caller closes ``io``."""
    from pynwb import NWBHDF5IO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        io = NWBHDF5IO(str(src), "r")
        return io, io.read()


def new_nwbfile(nwb, trials, identifier_suffix: str, description_suffix: str = ""):
    """A new NWBFile named after ``nwb`` holding the ``trials`` table (a DataFrame, every column
    copied) and an empty ``heldout`` unit column, ready for its units."""
    from pynwb import NWBFile

    out = NWBFile(session_description=nwb.session_description + description_suffix,
                  identifier=nwb.identifier + identifier_suffix,
                  session_start_time=dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc))
    for col in trials.columns:
        if col not in ("start_time", "stop_time"):
            out.add_trial_column(name=col, description=col)
    for rec in trials.to_dict("records"):
        out.add_trial(**rec)
    out.add_unit_column(name="heldout", description="held-out unit")
    return out


def write_nwb(out, dst: Path) -> Path:
    from pynwb import NWBHDF5IO

    dst.parent.mkdir(parents=True, exist_ok=True)
    with NWBHDF5IO(str(dst), "w") as wio:
        wio.write(out)
    return dst


def copy_without(src: Path, dst: Path, drop_unit: int | None = None, drop_trial_field: str | None = None) -> Path:
    """``src`` copied to ``dst`` (units, trials, behaviour series) less one unit id or one trial column."""
    from pynwb import TimeSeries

    io, nwb = read_nwb(src)
    try:
        trials = nwb.trials.to_dataframe()
        if drop_trial_field is not None:
            trials = trials.drop(columns=[drop_trial_field])
        out = new_nwbfile(nwb, trials, "-edited")
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
    return write_nwb(out, dst)
