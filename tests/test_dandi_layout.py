"""Every dataset's stand-in in the DANDI layout gives val and test tensors with exactly the
registry's trial and neuron counts, at 5 and 20 ms (train file alone; train and test together).

Stand-ins are written at full size (scale 1, NWB files only), so the counts are the registry's own.
The maze stand-ins hold trial segments (one obs_intervals row per unit and trial, behaviour rows
only inside trials), mc_rtt and area2_bump continuous recordings, as on DANDI.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from nlbpipe.datasets import BIN_SIZES, DATASETS, dataset_key
from nlbpipe.synthetic import SEGMENTED, write_synthetic
from nlbpipe.tensors import load_tensors

FULL_SIZE = [n for n in DATASETS if n != "mc_maze"]


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    root, cache = tmp_path_factory.mktemp("dandi_layout"), tmp_path_factory.mktemp("dandi_layout_cache")
    written = set()

    def get(name, scale=1.0):
        if name not in written:
            write_synthetic(name, root, seed=0, scale=scale, targets=False)
            written.add(name)
        return root, cache

    return get


def _layout(path):
    with h5py.File(path) as f:
        n_units, n_trials = len(f["units/id"]), len(f["intervals/trials/id"])
        obs_rows = f["units/obs_intervals"].shape[0]
        series = {}
        if "processing" in f and "behavior" in f["processing"]:
            for name, ts in f["processing/behavior"].items():
                series[name] = ts["timestamps"][()] if "timestamps" in ts else None
        starts, stops = f["intervals/trials/start_time"][()], f["intervals/trials/stop_time"][()]
    return n_units, n_trials, obs_rows, series, starts, stops


@pytest.mark.parametrize("name", FULL_SIZE)
def test_standin_counts_are_the_registry_s(name, full_size):
    info = DATASETS[name]
    root, cache = full_size(name)
    for bin_ms in BIN_SIZES:
        key = dataset_key(name, bin_ms)
        val, test = load_tensors(key, "val", root, cache), load_tensors(key, "test", root, cache)
        for t, n_train, n_eval in ((val, info.n_train, info.n_val),
                                   (test, info.n_train + info.n_val, info.n_test)):
            assert t["train_spikes_heldin"].shape[0] == t["train_spikes_heldout"].shape[0] == n_train, key
            assert t["eval_spikes_heldin"].shape[0] == n_eval, key
            assert t["train_spikes_heldin"].shape[2] == t["eval_spikes_heldin"].shape[2] == info.n_heldin
            assert t["train_spikes_heldout"].shape[2] == info.n_heldout
        assert val["eval_spikes_heldout"].shape[::2] == (info.n_val, info.n_heldout)


@pytest.mark.parametrize("name", FULL_SIZE)
def test_standin_layout_is_dandi_s(name, full_size):
    info = DATASETS[name]
    root, _ = full_size(name)
    for path in (info.train_path(root), info.test_path(root)):
        n_units, n_trials, obs_rows, series, starts, stops = _layout(path)
        if name in SEGMENTED:
            assert obs_rows == n_units * n_trials  # one interval per unit and trial
            assert series or path == info.test_path(root)
            for ts in series.values():
                assert ts is not None and np.diff(ts).max() > 0.1  # gaps between trials
                edges = np.round(np.ravel(np.c_[starts, stops]) * 1000)
                inside = np.searchsorted(edges, np.round(ts * 1000), side="right") % 2 == 1
                assert inside.all()
        else:
            assert obs_rows == n_units  # a continuous recording
            assert all(ts is None for ts in series.values())


def test_mc_maze_standin_counts_are_the_registry_s(full_size):
    """mc_maze at full size (its two-hour session: the suite's costliest stand-in), 5 and 20 ms."""
    test_standin_counts_are_the_registry_s("mc_maze", full_size)
    test_standin_layout_is_dandi_s("mc_maze", full_size)
