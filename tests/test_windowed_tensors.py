"""The windowed build equals nlb_tools' own arrays, for every dataset, both bin sizes and phases.

Spike tensors exactly (NaNs in the same places); PSTHs and decoding behaviour to a relative 1e-6 of
the array's scale (the float32 cache's precision); masks and condition indices exactly. The
reference is ``nlbpipe.tensors.reference_build`` (nlb_tools' NWBDataset and make_*_tensors).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from gapped_nwb import write_gapped

from nlbpipe import tensors as tensors_mod
from nlbpipe.datasets import BIN_SIZES, DATASETS, dataset_key
from nlbpipe.synthetic import write_synthetic
from nlbpipe.tensors import load_eval_targets, load_tensors, reference_build

SCALE = 0.01  # small stand-ins (a few dozen trials): every split and PSTH condition still present
SCALES = {"mc_maze": 0.005}  # its two-hour session; mc_maze_small is the suite's shared stand-in
RTOL = 1e-6
KEYS = [dataset_key(name, b) for name in DATASETS for b in BIN_SIZES]


@pytest.fixture(scope="session")
def standins(tmp_path_factory, request):
    """The raw folder holding a dataset's stand-in (NWB files only), written on first use."""
    root = tmp_path_factory.mktemp("windowed_standins")
    written = set()

    def get(name):
        if name == "mc_maze_small":  # conftest's session stand-in (read-only)
            return request.getfixturevalue("small_synthetic").raw_dir
        if name not in written:
            write_synthetic(name, root, seed=0, scale=SCALES.get(name, SCALE), targets=False)
            written.add(name)
        return root

    return get


def assert_same(got, ref, path=""):
    """Recursive equality under the rules in the module docstring."""
    if isinstance(ref, dict):
        assert set(got) == set(ref), f"{path}: keys {sorted(set(got) ^ set(ref))}"
        for k in ref:
            assert_same(got[k], ref[k], f"{path}/{k}")
        return
    got, ref = np.asarray(got), np.asarray(ref)
    if ref.dtype == object:
        assert len(got) == len(ref), path
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b, err_msg=path)
        return
    assert got.shape == ref.shape, f"{path}: shape {got.shape} != {ref.shape}"
    if "spikes" in path or ref.dtype == bool:
        np.testing.assert_array_equal(got, ref, err_msg=path)
        return
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{path}: NaN positions")
    scale = np.nanmax(np.abs(ref)) if np.isfinite(ref).any() else 0.0
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=RTOL * scale, equal_nan=True, err_msg=path)


def _windowed(key, phase, raw, with_psth=True):
    info, _ = tensors_mod.resolve(key)
    return tensors_mod._build_windowed(info, key, phase, tensors_mod._sources(info, phase, raw), with_psth)


@pytest.mark.parametrize("phase", ["val", "test"])
@pytest.mark.parametrize("key", KEYS)
def test_windowed_build_equals_nlb_tools(key, phase, standins):
    info, _ = tensors_mod.resolve(key)
    raw = standins(info.name)
    got_tensors, got_targets = _windowed(key, phase, raw)
    ref_tensors, ref_targets = reference_build(key, phase, raw, with_psth=True)
    assert_same(got_tensors, ref_tensors, "tensors")
    assert (got_targets is None) == (ref_targets is None)
    if ref_targets is not None:
        assert_same(got_targets, ref_targets, "targets")
        assert ("psth" in ref_targets[key]) == ("psth_params" in _params(info.name))
    # the comparison saw real data: spikes counted, and (val) behaviour present
    assert np.nansum(got_tensors["train_spikes_heldin"]) > 0


def _params(name):
    from nlb_tools.make_tensors import PARAMS

    return PARAMS[name]


@pytest.fixture(scope="session")
def gapped_raw(tmp_path_factory, standins):
    """mc_maze_small in the DANDI layout: trial segments, behaviour only inside trials."""
    src = standins("mc_maze_small")
    dst = tmp_path_factory.mktemp("gapped")
    info = DATASETS["mc_maze_small"]
    write_gapped(info.train_path(src), info.train_path(dst))
    write_gapped(info.test_path(src), info.test_path(dst))
    return dst


@pytest.fixture
def sorted_nlb_tools(monkeypatch):
    """nlb_tools' loader with its frame sorted by time: what it gives once issue 9's fix sorts it."""
    from nlb_tools.nwb_interface import NWBDataset

    original = NWBDataset.load

    def load(self, *args, **kwargs):
        data, trial_info, descriptions, bin_width = original(self, *args, **kwargs)
        return data.sort_index(), trial_info, descriptions, bin_width

    monkeypatch.setattr(NWBDataset, "load", load)


@pytest.mark.parametrize("phase", ["val", "test"])
@pytest.mark.parametrize("key", ["mc_maze_small", "mc_maze_small_20"])
def test_gapped_layout_equals_sorted_nlb_tools(key, phase, gapped_raw, sorted_nlb_tools):
    got_tensors, got_targets = _windowed(key, phase, gapped_raw)
    ref_tensors, ref_targets = reference_build(key, phase, gapped_raw, with_psth=True)
    assert_same(got_tensors, ref_tensors, "tensors")
    if phase == "val":
        assert_same(got_targets, ref_targets, "targets")
        assert np.isfinite(got_targets[key]["eval_behavior"]).all()


@pytest.mark.parametrize("phase", ["val", "test"])
@pytest.mark.parametrize("key", ["mc_maze_small", "mc_maze_small_20"])
def test_gapped_layout_equals_nlb_tools_reference(key, phase, gapped_raw):
    """The reference (nlbpipe.nwbload's NWBDataset, unpatched) on the gapped layout: every trial kept."""
    got_tensors, got_targets = _windowed(key, phase, gapped_raw)
    ref_tensors, ref_targets = reference_build(key, phase, gapped_raw, with_psth=True)
    assert_same(got_tensors, ref_tensors, "tensors")
    if phase == "val":
        assert_same(got_targets, ref_targets, "targets")


def test_gapped_layout_behaviour_outside_segments_is_nan(gapped_raw):
    """Bins outside every recorded segment hold NaN behaviour, as nlb_tools' sorted frame does."""
    from nlbpipe.recording import read_recording
    from nlbpipe.windows import behavior_windows, trial_windows

    rec = read_recording(DATASETS["mc_maze_small"].train_path(gapped_raw), behavior_field="hand_vel")
    include = np.ones(len(rec.trial_info), dtype=bool)
    # whole trials: each starts and ends with 30 ms (6 bins) outside its segment
    w = trial_windows(rec, 5, include, allow_nans=True)
    beh = behavior_windows(rec, "hand_vel", w)
    assert all(np.isnan(b[:6]).all() and np.isfinite(b[7:-7]).all() for b in beh)


def test_old_cache_format_is_rebuilt_not_mixed(standins, tmp_path, monkeypatch):
    """A cache written by the nlb_tools path (format 1) is rebuilt by the windowed one (format 3)."""
    raw, cache = standins("mc_maze_small"), tmp_path / "cache"
    with monkeypatch.context() as m:
        m.setattr(tensors_mod, "CACHE_FORMAT", 1)
        m.setattr(tensors_mod, "_build_windowed", tensors_mod._build)
        old_targets = load_eval_targets("mc_maze_small", "val", raw, cache)
    tensor_file, target_file = cache / "mc_maze_small_val.h5", cache / "mc_maze_small_val_targets.h5"
    with h5py.File(tensor_file) as f:
        assert f.attrs["format"] == 1
    stamps = tensor_file.stat().st_mtime_ns, target_file.stat().st_mtime_ns
    targets = load_eval_targets("mc_maze_small", "val", raw, cache)
    assert (tensor_file.stat().st_mtime_ns, target_file.stat().st_mtime_ns) != stamps
    with h5py.File(tensor_file) as f:
        assert f.attrs["format"] == tensors_mod.CACHE_FORMAT == 3
    assert_same(targets, old_targets)
    stamp = tensor_file.stat().st_mtime_ns
    load_tensors("mc_maze_small", "val", raw, cache)
    assert tensor_file.stat().st_mtime_ns == stamp  # the rebuilt cache serves from now on
