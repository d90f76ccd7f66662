"""nlbpipe.nwbload on a gapped-timestamp file built by hand (tests/gapped_nwb.py, not the synthetic
writer): the single-file and the directory load keep every trial, at 5 and 20 ms; nlb_tools' plain
NWBDataset on the same files shows the failure it fixes."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from gapped_nwb import write_gapped

from nlbpipe.datasets import DATASETS
from nlbpipe.nwbload import TrialCountError, check_trial_info, file_split_counts, open_nwb_dataset
from nlbpipe.tensors import DataFileError, reference_build

INFO = DATASETS["mc_maze_small"]
PREFIX = "sub-Jenkins_ses-small_desc-"


@pytest.fixture(scope="module")
def gapped(small_synthetic, tmp_path_factory):
    dst = tmp_path_factory.mktemp("nwbload_gapped")
    write_gapped(INFO.train_path(small_synthetic.raw_dir), INFO.train_path(dst))
    write_gapped(INFO.test_path(small_synthetic.raw_dir), INFO.test_path(dst))
    return dst


def _splits(path):
    return dict(file_split_counts(path))


def test_gapped_file_has_gapped_timestamps(gapped):
    with h5py.File(INFO.train_path(gapped)) as f:
        ts = f["processing/behavior/hand_vel/timestamps"][()]
        assert np.diff(ts).max() > 0.05  # unrecorded time between trials
        n_units = len(f["units/id"])
        n_trials = len(f["intervals/trials/id"])
        assert f["units/obs_intervals"].shape == (n_units * n_trials, 2)


@pytest.mark.parametrize("bin_ms", [5, 20])
def test_single_file_and_directory_keep_every_trial(gapped, bin_ms):
    from nlb_tools.make_tensors import make_train_input_tensors

    train = INFO.train_path(gapped)
    ds = open_nwb_dataset(train)
    assert ds.data.index.is_monotonic_increasing
    ds.resample(bin_ms)
    want = _splits(train)
    t = make_train_input_tensors(ds, INFO.name, trial_split="train", save_file=False)
    assert t["train_spikes_heldin"].shape[0] == want["train"]
    both = open_nwb_dataset([train, INFO.test_path(gapped)])
    assert both.data.index.is_monotonic_increasing
    both.resample(bin_ms)
    t = make_train_input_tensors(both, INFO.name, trial_split=["train", "val"], save_file=False)
    assert t["train_spikes_heldin"].shape[0] == want["train"] + want["val"]
    assert (both.trial_info.split == "test").sum() == _splits(INFO.test_path(gapped))["test"]


def test_plain_nlb_tools_fails_on_the_same_files(gapped):
    """The failure nwbload fixes: the single file does not re-bin, the directory loses a trial."""
    from nlb_tools.make_tensors import make_train_input_tensors
    from nlb_tools.nwb_interface import NWBDataset

    ds = NWBDataset(str(INFO.train_path(gapped)))
    assert not ds.data.index.is_monotonic_increasing
    with pytest.raises(ValueError, match="Inferred frequency"):
        ds.resample(5)
    both = NWBDataset(str(INFO.train_path(gapped).parent), PREFIX)
    both.resample(5)
    t = make_train_input_tensors(both, INFO.name, trial_split=["train", "val"], save_file=False)
    want = _splits(INFO.train_path(gapped))
    assert t["train_spikes_heldin"].shape[0] < want["train"] + want["val"]


@pytest.mark.parametrize("phase", ["val", "test"])
def test_reference_build_keeps_every_trial(gapped, phase):
    tensors, _ = reference_build("mc_maze_small_20", phase, gapped, with_psth=False)
    tv, test = _splits(INFO.train_path(gapped)), _splits(INFO.test_path(gapped))
    n_train = tv["train"] if phase == "val" else tv["train"] + tv["val"]
    n_eval = tv["val"] if phase == "val" else test["test"]
    assert tensors["train_spikes_heldin"].shape[0] == n_train
    assert tensors["eval_spikes_heldin"].shape[0] == n_eval


def test_lost_trial_is_an_error_naming_file_and_split(gapped):
    ds = open_nwb_dataset(INFO.train_path(gapped))
    lost = ds.trial_info.split.iloc[-1]
    n = _splits(INFO.train_path(gapped))[lost]
    with pytest.raises(TrialCountError, match=rf"desc-train.*split '{lost}' has {n - 1} trials after loading, "
                                              rf"the file's trials table {n}"):
        check_trial_info(ds.trial_info.iloc[:-1], [INFO.train_path(gapped)])


def test_a_stray_file_in_the_folder_is_named(gapped, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(gapped, raw)
    stray = INFO.train_path(raw).with_name(PREFIX + "test2_ecephys.nwb")
    shutil.copy(INFO.test_path(raw), stray)
    with pytest.raises(DataFileError, match="test2_ecephys"):
        reference_build("mc_maze_small", "test", raw, with_psth=False)
