import shutil

import h5py
import numpy as np
import pytest

from nlbpipe.datasets import DATASETS
from nlbpipe.synthetic import write_synthetic
from nlbpipe.tensors import TEST_KEYS, VAL_KEYS, DataFileError, load_eval_targets, load_tensors


@pytest.mark.parametrize("name", list(DATASETS))
def test_each_dataset_loads_through_nlb_tools_and_reloads_from_cache(name, tmp_path):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    write_synthetic(name, raw, seed=0, scale=0.01, targets=False)
    info = DATASETS[name]
    t = load_tensors(name, "val", raw_dir=raw, cache_dir=cache)
    assert set(t) == set(VAL_KEYS)
    assert t["train_spikes_heldin"].shape[2] == t["eval_spikes_heldin"].shape[2] == info.n_heldin
    assert t["train_spikes_heldout"].shape[2] == t["eval_spikes_heldout"].shape[2] == info.n_heldout
    assert t["train_spikes_heldin"].shape[0] == t["train_spikes_heldout"].shape[0] >= 6
    assert all(v.dtype == np.float32 and v.ndim == 3 for v in t.values())
    assert np.nansum(t["train_spikes_heldin"]) > 0
    cache_file = cache / f"{name}_val.h5"
    stamp = cache_file.stat().st_mtime_ns
    again = load_tensors(name, "val", raw_dir=raw, cache_dir=cache)
    assert cache_file.stat().st_mtime_ns == stamp  # served from the cache, not rebuilt
    for k in VAL_KEYS:
        np.testing.assert_array_equal(again[k], t[k])


def test_bins_and_phases(small_synthetic):
    fx = small_synthetic
    v5 = load_tensors("mc_maze_small", "val", fx.raw_dir, fx.cache_dir)
    v20 = load_tensors("mc_maze_small_20", "val", fx.raw_dir, fx.cache_dir)
    assert v5["train_spikes_heldin"].shape[1] == 140 and v20["train_spikes_heldin"].shape[1] == 35
    assert v5["eval_spikes_heldin_forward"].shape[1] == 40 and v20["eval_spikes_heldin_forward"].shape[1] == 10
    # the same spikes, re-binned
    np.testing.assert_allclose(v5["train_spikes_heldin"].sum(), v20["train_spikes_heldin"].sum(), rtol=0.02)
    test = load_tensors("mc_maze_small", "test", fx.raw_dir, fx.cache_dir)
    assert set(test) == set(TEST_KEYS)
    n_tv = v5["train_spikes_heldin"].shape[0] + v5["eval_spikes_heldin"].shape[0]
    assert test["train_spikes_heldin"].shape[0] == n_tv
    assert test["eval_spikes_heldin"].shape[0] == 20 and test["eval_spikes_heldin"].shape[2] == 107


def test_eval_targets(small_synthetic):
    fx = small_synthetic
    val = load_eval_targets("mc_maze_small", "val", fx.raw_dir, fx.cache_dir)["mc_maze_small"]
    t = load_tensors("mc_maze_small", "val", fx.raw_dir, fx.cache_dir)
    np.testing.assert_array_equal(val["eval_spikes_heldout"], t["eval_spikes_heldout"])
    assert {"psth", "eval_cond_idx", "train_behavior", "eval_behavior"} <= set(val)
    test = load_eval_targets("mc_maze_small_20", "test", fx.raw_dir, fx.cache_dir)
    assert list(test) == ["mc_maze_small_20"]
    assert test["mc_maze_small_20"]["eval_spikes_heldout"].shape == (20, 35, 35)


def _copy_raw(fx, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(fx.raw_dir, raw)
    return raw


def test_changed_nwb_rebuilds_cache(small_synthetic, tmp_path):
    raw, cache = _copy_raw(small_synthetic, tmp_path), tmp_path / "cache"
    first = load_tensors("mc_maze_small", "val", raw, cache)
    with h5py.File(cache / "mc_maze_small_val.h5") as f:
        fp_first = f.attrs["fingerprint"]
    write_synthetic("mc_maze_small", raw, seed=1, scale=0.2, targets=False, force=True)  # another seed: forced
    second = load_tensors("mc_maze_small", "val", raw, cache)
    with h5py.File(cache / "mc_maze_small_val.h5") as f:
        assert f.attrs["fingerprint"] != fp_first
    assert not np.array_equal(first["train_spikes_heldin"], second["train_spikes_heldin"])
    assert not list(cache.glob("*.part"))


def test_missing_nwb_names_the_file(tmp_path):
    with pytest.raises(DataFileError) as err:
        load_tensors("mc_maze_small", "val", raw_dir=tmp_path / "nowhere", cache_dir=tmp_path / "c")
    assert "sub-Jenkins_ses-small_desc-train_behavior+ecephys.nwb" in str(err.value)
    assert "NLB_DATA_RAW" in str(err.value)


def test_missing_test_file_names_it(small_synthetic, tmp_path):
    raw = _copy_raw(small_synthetic, tmp_path)
    test_nwb = DATASETS["mc_maze_small"].test_path(raw)
    test_nwb.unlink()
    with pytest.raises(DataFileError, match="desc-test_ecephys.nwb"):
        load_tensors("mc_maze_small", "test", raw, tmp_path / "c")


def test_corrupt_nwb_names_the_file(small_synthetic, tmp_path):
    raw = _copy_raw(small_synthetic, tmp_path)
    train = DATASETS["mc_maze_small"].train_path(raw)
    data = train.read_bytes()
    train.write_bytes(data[: len(data) // 3])  # a truncated download
    with pytest.raises(DataFileError) as err:
        load_tensors("mc_maze_small", "val", raw, tmp_path / "c")
    assert str(train) in str(err.value)
    assert not (tmp_path / "c" / "mc_maze_small_val.h5").exists()


def test_test_phase_targets_absent_is_a_clear_error(small_synthetic, tmp_path):
    raw = _copy_raw(small_synthetic, tmp_path)
    (DATASETS["mc_maze_small"].test_path(raw).parent / "eval_data_test.h5").unlink()
    with pytest.raises(DataFileError, match="EvalAI"):
        load_eval_targets("mc_maze_small", "test", raw, tmp_path / "c")


def test_bad_phase():
    with pytest.raises(ValueError, match="phase"):
        load_tensors("mc_maze_small", "train")


def test_default_dirs_come_from_settings(small_synthetic, nlb_home):
    shutil.copytree(small_synthetic.raw_dir, nlb_home.data_raw)
    t = load_tensors("mc_maze_small", "val")
    assert (nlb_home.cache_dir / "mc_maze_small_val.h5").is_file()
    assert t["train_spikes_heldin"].shape[2] == 107


def test_equal_sized_condition_groups_are_cached_and_read_back(tmp_path):
    # nlb_tools gives a 2-d object array when every condition has the same number of trials (a
    # full-size area2_bump stand-in: 16 x 17); its save_to_h5 could not store that
    from nlbpipe.tensors import _read_cached_targets, _write_targets

    equal = np.array([np.array([0, 3]), np.array([1, 2])], dtype=object)  # 2-d object array
    ragged = np.array([np.array([0, 3]), np.array([1])], dtype=object)
    assert equal.ndim == 2 and equal.dtype == object
    path = tmp_path / "targets.h5"
    _write_targets(path, {"k": {"train_cond_idx": equal, "eval_cond_idx": ragged,
                                "psth": np.zeros((2, 3, 4))}}, "fp")
    back = _read_cached_targets(path, "fp")["k"]
    assert [list(r) for r in back["train_cond_idx"]] == [[0, 3], [1, 2]]
    assert [list(r) for r in back["eval_cond_idx"]] == [[0, 3], [1]]
