import json

import h5py
import numpy as np
import pytest
from nlb_tools.evaluation import evaluate
from pynwb import NWBHDF5IO

from nlbpipe import __version__
from nlbpipe.datasets import DATASETS
from nlbpipe.rates import RATE_KEYS
from nlbpipe.synthetic import (
    MANIFEST_NAME,
    SYNTHETIC_MARK,
    SyntheticError,
    is_synthetic_nwb,
    true_rates,
    write_synthetic,
)
from nlbpipe.tensors import load_eval_targets, load_tensors

INFO = DATASETS["mc_maze_small"]


def _units(path):
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        return nwb.units.to_dataframe(), nwb.session_description, nwb.trials.to_dataframe()


def test_layout_and_marks(small_synthetic):
    raw = small_synthetic.raw_dir
    assert INFO.train_path(raw).is_file() and INFO.test_path(raw).is_file()
    manifest = json.loads((raw / MANIFEST_NAME).read_text())
    assert manifest["datasets"]["mc_maze_small"] == {"dataset": "mc_maze_small", "seed": 0, "scale": 0.2,
                                                     "nlbpipe_version": __version__, "targets": True,
                                                     "realism": "realistic"}
    _, desc, _ = _units(INFO.train_path(raw))
    assert SYNTHETIC_MARK in desc and "NOT real data" in desc
    assert is_synthetic_nwb(INFO.test_path(raw))


def test_test_file_holds_only_heldin_units(small_synthetic):
    raw = small_synthetic.raw_dir
    train_units, _, train_trials = _units(INFO.train_path(raw))
    test_units, _, test_trials = _units(INFO.test_path(raw))
    assert len(train_units) == INFO.n_neurons and train_units.heldout.sum() == INFO.n_heldout
    assert len(test_units) == INFO.n_heldin and not test_units.heldout.any()
    assert set(train_trials.split) == {"train", "val"} and set(test_trials.split) == {"test"}
    assert (train_trials.split == "train").sum() == 15 and (train_trials.split == "val").sum() == 5
    assert len(test_trials) == 20


def test_condition_coverage_when_scaled(small_synthetic):
    _, _, trials = _units(INFO.train_path(small_synthetic.raw_dir))
    conds = trials.groupby(["trial_type", "trial_version"]).size()
    assert len(conds) == 20  # 20 train+val trials over 27 conditions: no condition repeated early
    assert conds.max() == 1


def test_hidden_targets_score_through_nlb_tools(small_synthetic):
    fx = small_synthetic
    for key in ("mc_maze_small", "mc_maze_small_20"):
        targets = load_eval_targets(key, "test", fx.raw_dir, fx.cache_dir)
        truth = true_rates(key, "test", fx.raw_dir)
        tensors = load_tensors(key, "test", fx.raw_dir, fx.cache_dir)
        assert truth["train_rates_heldin"].shape == tensors["train_spikes_heldin"].shape
        assert truth["eval_rates_heldin"].shape == tensors["eval_spikes_heldin"].shape
        scores = evaluate(targets, {key: truth})[0]
        split = "mc_maze_scaling_split" if key == "mc_maze_small" else "mc_maze_scaling_20_split"
        s = scores[split]
        assert s["[100] co-bps"] > 0.15
        assert s["[100] vel R2"] > 0.5
        assert s["[100] fp-bps"] > 0
        assert "[100] psth R2" in s
        # a flat prediction (each neuron's mean) scores ~0 co-bps: the targets carry signal
        flat = {k: np.broadcast_to(v.mean(axis=(0, 1), keepdims=True), v.shape).copy() for k, v in truth.items()}
        assert evaluate(targets, {key: flat})[0][split]["[100] co-bps"] < 0.02


def test_truth_matches_the_spikes(small_synthetic):
    fx = small_synthetic
    truth = true_rates("mc_maze_small", "val", fx.raw_dir)
    t = load_tensors("mc_maze_small", "val", fx.raw_dir, fx.cache_dir)
    assert set(truth) == set(RATE_KEYS)
    for name in ("train_spikes_heldin", "eval_spikes_heldout", "eval_spikes_heldin_forward"):
        rate = truth[name.replace("spikes", "rates")]
        spikes = t[name]
        assert rate.shape == spikes.shape
        # expected counts predict the counts: mean matches, correlation clearly positive
        np.testing.assert_allclose(rate.sum(), spikes.sum(), rtol=0.1)
        assert np.corrcoef(rate.ravel(), spikes.ravel())[0, 1] > 0.1


def test_rewrite_skips_when_present_and_another_seed_needs_force(small_synthetic, tmp_path):
    root = tmp_path / "syn"
    paths = write_synthetic("mc_maze_small", root, seed=3, scale=0.05, targets=False)
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert write_synthetic("mc_maze_small", root, seed=3, scale=0.05, targets=False) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    with pytest.raises(SyntheticError, match="written with seed 3, scale 0.05, realism realistic; --seed 4 .* add --force"):
        write_synthetic("mc_maze_small", root, seed=4, scale=0.05, targets=False)
    assert [p.stat().st_mtime_ns for p in paths] == stamps  # another seed never silently replaces files
    write_synthetic("mc_maze_small", root, seed=4, scale=0.05, targets=False, force=True)
    assert [p.stat().st_mtime_ns for p in paths] != stamps
    assert json.loads((root / MANIFEST_NAME).read_text())["datasets"]["mc_maze_small"]["seed"] == 4
    assert not list(root.rglob("*.part")) and not list(root.glob(".nlbpipe-synthetic-*"))


def test_same_seed_same_data(tmp_path):
    a = write_synthetic("area2_bump", tmp_path / "a", seed=7, scale=0.02, targets=False)
    b = write_synthetic("area2_bump", tmp_path / "b", seed=7, scale=0.02, targets=False)
    ua, _, _ = _units(a[0])
    ub, _, _ = _units(b[0])
    for x, y in zip(ua.spike_times, ub.spike_times):
        np.testing.assert_array_equal(x, y)


def test_refuses_a_folder_of_real_downloads(tmp_path):
    folder = INFO.train_path(tmp_path).parent
    folder.mkdir(parents=True)
    with h5py.File(INFO.train_path(tmp_path), "w") as f:
        f["session_description"] = "Jenkins maze, real recording"
    with pytest.raises(SyntheticError, match="real"):
        write_synthetic("mc_maze_small", tmp_path, scale=0.05, targets=False)


def test_bad_scale_and_unknown_dataset(tmp_path):
    with pytest.raises(SyntheticError, match="scale"):
        write_synthetic("mc_maze_small", tmp_path, scale=0)
    with pytest.raises(ValueError, match="mc_maze_small_20"):
        write_synthetic("not_a_dataset", tmp_path)


def test_true_rates_missing(tmp_path):
    with pytest.raises(SyntheticError, match="download_data.py --synthetic"):
        true_rates("mc_maze_small", "val", tmp_path)


def _heldin_hz(raw, cache, phase="test"):
    t = load_tensors("mc_maze_small", phase, raw, cache)
    s = t["eval_spikes_heldin"]
    return float(np.nansum(s) / (s.shape[0] * s.shape[1] * 0.005 * s.shape[2])), t


def test_realistic_firing_follows_the_real_files(small_synthetic, tmp_path):
    """Realistic (default): a few Hz in the aligned window, log-normal spread; easy: the old ~13 Hz."""
    fx = small_synthetic
    hz, _ = _heldin_hz(fx.raw_dir, fx.cache_dir)
    assert 3.5 < hz < 5.5  # DANDI 000140's test file: 4.4 Hz
    truth = true_rates("mc_maze_small", "val", fx.raw_dir)
    unit_hz = np.concatenate([truth["train_rates_heldin"], truth["train_rates_heldout"]], 2).mean((0, 1)) * 200
    assert 0.7 < np.log(unit_hz).std() < 1.5 and np.median(unit_hz) < hz
    easy = tmp_path / "easy"
    write_synthetic("mc_maze_small", easy, seed=0, scale=0.2, targets=False, realism="easy")
    easy_hz, _ = _heldin_hz(easy, tmp_path / "cache")
    assert easy_hz > 10
    assert json.loads((easy / MANIFEST_NAME).read_text())["datasets"]["mc_maze_small"]["realism"] == "easy"


def test_realism_changes_what_is_written_and_is_checked(tmp_path):
    a = write_synthetic("mc_maze_small", tmp_path, seed=3, scale=0.05, targets=False, realism="easy")
    stamps = [p.stat().st_mtime_ns for p in a]
    with pytest.raises(SyntheticError, match="realism easy.*add --force"):
        write_synthetic("mc_maze_small", tmp_path, seed=3, scale=0.05, targets=False)  # realistic over easy
    assert [p.stat().st_mtime_ns for p in a] == stamps
    write_synthetic("mc_maze_small", tmp_path, seed=3, scale=0.05, targets=False, force=True)  # rewritten
    assert [p.stat().st_mtime_ns for p in a] != stamps
    with pytest.raises(SyntheticError, match="realism must be one of realistic, easy"):
        write_synthetic("mc_maze_small", tmp_path, scale=0.05, realism="hard")


def test_dmfc_rsg_has_its_own_weaker_profile(monkeypatch):
    """dmfc_rsg's stand-in: the dataset's mean rate in its aligned window, and log rates less
    modulated than the maze profile makes them for the same draw (README: its truth was twice the maze's)."""
    from nlbpipe import synthetic_rates
    from nlbpipe.synthetic_model import _simulate

    info = DATASETS["dmfc_rsg"]
    assert synthetic_rates.PROFILES["dmfc_rsg"] != synthetic_rates.PROFILES["mc_maze_small"]

    def window_log_rates():
        model, _, trainval, _ = _simulate(info, 0, 0.05)
        idx = synthetic_rates._aligned_ms(trainval, info.name)
        return model.log_rates(trainval.latents[idx].astype(np.float64))

    own = window_log_rates()
    assert np.exp(own).mean() * 1000 == pytest.approx(synthetic_rates.PROFILES["dmfc_rsg"].mean_hz, rel=0.02)
    monkeypatch.setitem(synthetic_rates.PROFILES, "dmfc_rsg", synthetic_rates.PROFILES["mc_maze_small"])
    maze = window_log_rates()
    assert np.median(own.std(axis=0)) < 0.9 * np.median(maze.std(axis=0))
