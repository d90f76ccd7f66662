"""Ensembles by val co-bps: exact scoring from statistics, top-N curve, greedy + CV guard, the CLI.

``make_experiment`` (also used by the submission tests) writes a small experiment folder the way
run_hyperopt.py does: checkpoints.csv plus checkpoint folders holding rates_val.h5/rates_test.h5,
and the val/test eval targets. Every "model" is the true rates times independent log-normal noise,
so averaging models really does help and the best single checkpoint is known.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from nlbpipe import ensemble as ens
from nlbpipe import submission as sub
from nlbpipe.ensemble.statistics import _Subset
from nlbpipe.rates import RATE_KEYS, load_rates, save_rates
from nlbpipe.scoring import co_bps
from nlbpipe.submission import shapes_from_registry

REPO = Path(__file__).resolve().parents[1]
KEY = "area2_bump_20"  # registry test-phase shapes are small: 364/100 trials, 30 bins, 49/16 neurons


def _write_targets(path: Path, key: str, targets: dict) -> None:
    with h5py.File(path, "w") as f:
        g = f.create_group(key)
        for k, v in targets.items():
            g.create_dataset(k, data=v)


def make_experiment(root: Path, n_ckpts: int = 8, key: str = KEY, seed: int = 0, sigmas=None, val_trials=None):
    """An experiment folder with registry-shaped test rates; returns a dict of paths and truths."""
    rng = np.random.default_rng(seed)
    test_shapes = shapes_from_registry(key)
    n_tr_test, n_bins, n_in = test_shapes["train_rates_heldin"]
    n_out = test_shapes["train_rates_heldout"][2]
    n_fw = test_shapes["eval_rates_heldin_forward"][1]
    n_ev_test = test_shapes["eval_rates_heldin"][0]
    n_val = val_trials or 92
    n_tr_val = n_tr_test - n_val
    n_lat = 3
    W = rng.normal(0, 0.6, (n_lat, n_in + n_out))
    b = rng.normal(-1.2, 0.3, n_in + n_out)

    def latents(n):
        t = np.arange(n_bins + n_fw)[None, :, None] / 8.0
        phase = rng.uniform(0, 2 * np.pi, (n, 1, n_lat))
        return np.sin(t * np.arange(1, n_lat + 1) + phase)

    def phase_truth(n_train, n_eval):
        zt, ze = latents(n_train), latents(n_eval)
        return zt, ze, np.exp(zt @ W + b), np.exp(ze @ W + b)

    def split(rt, re):
        return {
            "train_rates_heldin": rt[:, :n_bins, :n_in], "train_rates_heldout": rt[:, :n_bins, n_in:],
            "eval_rates_heldin": re[:, :n_bins, :n_in], "eval_rates_heldout": re[:, :n_bins, n_in:],
            "eval_rates_heldin_forward": re[:, n_bins:, :n_in], "eval_rates_heldout_forward": re[:, n_bins:, n_in:],
        }

    def targets(zt, ze, rt, re):
        spikes = rng.poisson(re).astype(float)
        return {
            "eval_spikes_heldout": spikes[:, :n_bins, n_in:],
            "eval_spikes_heldin_forward": spikes[:, n_bins:, :n_in],
            "eval_spikes_heldout_forward": spikes[:, n_bins:, n_in:],
            "train_behavior": zt[:, :n_bins, :2] + rng.normal(0, 0.05, (zt.shape[0], n_bins, 2)),
            "eval_behavior": ze[:, :n_bins, :2] + rng.normal(0, 0.05, (ze.shape[0], n_bins, 2)),
        }

    val = phase_truth(n_tr_val, n_val)
    test = phase_truth(n_tr_test, n_ev_test)
    val_targets, test_targets = targets(*val), targets(*test)
    exp = root / "results" / key / "exp1"
    exp.mkdir(parents=True)
    sigmas = sigmas if sigmas is not None else np.linspace(0.25, 0.6, n_ckpts)
    rows = []
    for i, s in enumerate(sigmas):
        trial_id = f"t{i:03d}"
        kind = ("best_co_bps", "best_masked_loss")[i % 2]
        rel = f"trial_{trial_id}/checkpoints/{kind}"
        ckpt = exp / rel
        ckpt.mkdir(parents=True)
        noisy = {}
        for ph, (_, _, rt, re) in (("val", val), ("test", test)):
            noisy[ph] = split(rt * np.exp(rng.normal(0, s, rt.shape)), re * np.exp(rng.normal(0, s, re.shape)))
            save_rates(ckpt / f"rates_{ph}.h5", noisy[ph], phase=ph)
        (ckpt / "config.yaml").write_text(f"data:\n  dataset: {key}\n  raw_dir: {root / 'raw'}\n  cache_dir: {root / 'cache'}\n")
        rows.append({"trial_id": trial_id, "kind": kind, "checkpoint_dir": rel,
                     "val_co_bps": co_bps(noisy["val"]["eval_rates_heldout"], val_targets["eval_spikes_heldout"]),
                     "val_vel_r2": 0.0, "hp/model.dropout": 0.1 * i})
    pd.DataFrame(rows).sort_values("val_co_bps", ascending=False).to_csv(exp / "checkpoints.csv", index=False)
    _write_targets(root / "val_targets.h5", key, val_targets)
    _write_targets(root / "eval_data_test.h5", key, test_targets)
    return {"experiment": exp, "val_targets": root / "val_targets.h5", "test_targets": root / "eval_data_test.h5",
            "spikes": val_targets["eval_spikes_heldout"], "key": key, "root": root}


def run_cli(script: str, *args, env_root: Path | None = None):
    import os

    env = dict(os.environ)
    # nlb_tools' ridge decoders are tiny; threaded BLAS on a shared 2-core box only adds contention
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    if env_root is not None:
        env.update(NLB_HOME=str(env_root), RAY_TUNE_HOME=str(env_root / "results"),
                   NLB_SUBMISSIONS_DIR=str(env_root / "submissions"), NLB_DATA_RAW=str(env_root / "raw"),
                   NLB_CACHE_DIR=str(env_root / "cache"))
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return make_experiment(tmp_path_factory.mktemp("ens"))


# ------------------------------------------------------------------------------ exact statistics


def test_scorer_matches_nlb_tools_co_bps_for_weighted_means_and_trial_subsets():
    rng = np.random.default_rng(1)
    spikes = rng.poisson(0.3, (12, 10, 5)).astype(float)
    spikes[3, 7:, :] = np.nan  # nlb_tools masks NaN spike bins (dmfc_rsg padding)
    models = [rng.gamma(2.0, 0.15, spikes.shape) for _ in range(3)]
    models[1][0, 0, 0] = 0.0  # zero rate: nlb_tools substitutes 1e-9
    scorer = ens.HeldoutScorer(spikes)
    for m in models:
        scorer.add(m)
    w = np.array([0.5, 0.3, 0.2])
    mix = sum(wi * m for wi, m in zip(w, models))
    assert scorer.co_bps(w) == pytest.approx(co_bps(mix, spikes), abs=1e-10)
    assert scorer.co_bps([0, 1, 0]) == pytest.approx(co_bps(models[1], spikes), abs=1e-10)
    subset = np.zeros(12, bool)
    subset[[0, 3, 5, 8]] = True
    assert scorer.co_bps(w, subset) == pytest.approx(co_bps(mix[subset], spikes[subset]), abs=1e-10)


def test_scorer_rejects_shape_mismatch_and_bad_rates():
    scorer = ens.HeldoutScorer(np.ones((4, 5, 3)))
    with pytest.raises(ens.EnsembleError, match=r"shape \(4, 5, 2\)"):
        scorer.add(np.ones((4, 5, 2)), name="ckpt_a")
    with pytest.raises(ens.EnsembleError, match="ckpt_b.*NaN"):
        scorer.add(np.full((4, 5, 3), np.nan), name="ckpt_b")


def test_topn_curve_is_the_mean_of_the_top_n(experiment):
    library, scorer = ens.build_library(experiment["experiment"], experiment["spikes"], max_models=6)
    topn, _, curve, singles, _, _ = ens.select(scorer, method="topn", folds=0)
    assert len(curve) == 6
    rates = [load_rates(c.rates_val)["eval_rates_heldout"].astype(np.float64) for c in library]
    for n in (1, 3, 6):
        assert curve[n - 1] == pytest.approx(co_bps(np.mean(rates[:n], axis=0), experiment["spikes"]), abs=1e-9)
    assert singles[0] == pytest.approx(library[0].val_co_bps, abs=1e-6)
    assert topn.size == int(np.argmax(curve)) + 1


def test_fold_masks_partition_the_val_trials():
    masks = ens.fold_masks(23, 5, seed=3)
    assert len(masks) == 5
    assert np.array_equal(np.sum(masks, axis=0), np.ones(23))
    assert ens.fold_masks(23, 0, 0) == []
    with pytest.raises(ens.EnsembleError, match="--folds 30"):
        ens.fold_masks(23, 30, 0)


# ------------------------------------------------------------------------------ selection


def test_ensemble_beats_best_single_and_reports_both_methods(experiment):
    result = ens.build_ensemble(experiment["experiment"], experiment["spikes"], method="both", folds=4)
    best_single = float(np.max(result.single_co_bps))
    assert result.topn.val_co_bps >= best_single
    assert result.greedy.val_co_bps >= best_single
    assert result.chosen.val_co_bps > best_single + 0.01  # independent noise: averaging clearly helps
    assert np.isfinite(result.topn.cv_co_bps) and np.isfinite(result.greedy.cv_co_bps)
    assert sum(result.greedy.weights) == pytest.approx(1.0)
    assert sum(result.greedy.counts) == result.greedy.size
    expected = result.greedy if result.greedy.cv_co_bps > result.topn.cv_co_bps else result.topn
    assert result.chosen is expected
    lines = "\n".join(ens.summary_lines(result))
    assert "top-N" in lines and "greedy" in lines and "best single" in lines


def test_greedy_weights_reproduce_its_score(experiment):
    library, scorer = ens.build_library(experiment["experiment"], experiment["spikes"], max_models=8)
    _, greedy, *_ = ens.select(scorer, method="greedy", folds=3, greedy_max_size=12)
    w = np.zeros(len(library))
    w[greedy.indices] = greedy.weights
    assert scorer.co_bps(w) == pytest.approx(greedy.val_co_bps, abs=1e-9)
    assert 3 <= greedy.size <= 12


def test_cv_guard_reports_below_in_sample_on_a_tiny_val_set(tmp_path):
    # 10 val trials, 12 equally noisy models: any in-sample gain of greedy weights is fitting noise.
    exp = make_experiment(tmp_path, n_ckpts=12, sigmas=[0.5] * 12, val_trials=10, seed=5)
    result = ens.build_ensemble(exp["experiment"], exp["spikes"], method="both", folds=5, greedy_max_size=20)
    assert result.greedy.cv_co_bps < result.greedy.val_co_bps
    assert result.topn.cv_co_bps < result.topn.val_co_bps


def test_size_and_max_models_are_checked(experiment):
    with pytest.raises(ens.EnsembleError, match="--size 9"):
        ens.build_ensemble(experiment["experiment"], experiment["spikes"], size=9, method="topn", max_models=8)
    with pytest.raises(ens.EnsembleError, match="--max-models 0"):
        ens.build_ensemble(experiment["experiment"], experiment["spikes"], max_models=0)
    with pytest.raises(ens.EnsembleError, match="--method"):
        ens.build_ensemble(experiment["experiment"], experiment["spikes"], method="bagging")
    for kwargs, flag in [({"n_init": 0}, "--greedy-init 0"), ({"folds": 1}, "--folds 1"), ({"folds": -2}, "--folds -2")]:
        with pytest.raises(ens.EnsembleError, match=flag):  # refused, never quietly turned into something else
            ens.build_ensemble(experiment["experiment"], experiment["spikes"], **kwargs)


def test_checkpoints_without_rates_are_skipped(tmp_path):
    exp = make_experiment(tmp_path, n_ckpts=4)
    first = ens.read_checkpoints_csv(exp["experiment"])[0]
    first.rates_test.unlink()
    messages = []
    library = ens.with_rates(ens.read_checkpoints_csv(exp["experiment"]), log=messages.append)
    assert [c.trial_id for c in library] == [c.trial_id for c in ens.read_checkpoints_csv(exp["experiment"])[1:]]
    assert "skipping 1 checkpoint" in messages[0] and first.trial_id in messages[0]


def test_bad_experiment_folders_name_the_file(tmp_path):
    with pytest.raises(ens.EnsembleError, match="checkpoints.csv not found"):
        ens.read_checkpoints_csv(tmp_path)
    (tmp_path / "checkpoints.csv").write_text("trial_id,kind\na,b\n")
    with pytest.raises(ens.EnsembleError, match="lacks column.*checkpoint_dir"):
        ens.read_checkpoints_csv(tmp_path)
    with pytest.raises(ens.EnsembleError, match="no experiment"):
        ens.find_experiment("mc_maze", None, tmp_path / "nowhere")


def test_weighted_mean_rates_accumulates_in_member_order():
    rng = np.random.default_rng(0)
    a = {k: rng.random((2, 3, 4)).astype(np.float32) for k in RATE_KEYS}
    b = {k: rng.random((2, 3, 4)).astype(np.float32) for k in RATE_KEYS}
    out = ens.weighted_mean_rates([a, b], [0.25, 0.75])
    for k in RATE_KEYS:
        assert out[k].dtype == np.float32
        np.testing.assert_allclose(out[k], 0.25 * a[k] + 0.75 * b[k], rtol=1e-6)
    bad = dict(b, eval_rates_heldout=np.ones((2, 3, 5), np.float32))
    with pytest.raises(ens.EnsembleError, match="eval_rates_heldout has shape"):
        ens.weighted_mean_rates([a, bad], [0.5, 0.5])


# ------------------------------------------------------------------------------ the script


def test_build_ensemble_cli_writes_everything(experiment, tmp_path):
    out = tmp_path / "sub"
    r = run_cli("build_ensemble.py", KEY, "--experiment", experiment["experiment"], "--targets",
                experiment["val_targets"], "--out", out, "--folds", "3", env_root=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "top-N" in r.stdout and "greedy" in r.stdout and "vel_r2" in r.stdout and "fp_bps" in r.stdout
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    record = json.loads((out / "ensemble.json").read_text())
    assert record["method"] == summary["method"] and record["dataset"] == KEY
    assert record["ensemble"]["val_co_bps"] >= record["best_single"]["val_co_bps"]
    # what is submitted (the smoothed rates) is what val_co_bps scores; smoothing never lowers it on val
    assert record["ensemble"]["val_metrics"]["co_bps"] == pytest.approx(record["ensemble"]["val_co_bps"], abs=1e-4)
    smoothing = record["smoothing"]
    assert smoothing["chosen_by"] == "val co-bps" and smoothing["bin_ms"] == 20
    assert record["ensemble"]["val_co_bps"] == max(smoothing["val_co_bps_by_sd_ms"].values())
    assert record["ensemble"]["val_co_bps"] >= record["ensemble"]["unsmoothed_val_co_bps"]
    assert summary["smooth_ms"] == smoothing["sd_ms"]
    assert len(record["curve"]["val_co_bps"]) == 8 and record["greedy_path"]["val_co_bps"]
    assert record["topn"]["val_co_bps"] and record["greedy"]["val_co_bps"]
    for m in record["members"]:
        assert Path(m["checkpoint_path"]).is_dir() and {"trial_id", "kind", "weight", "val_co_bps"} <= set(m)
    assert sum(m["weight"] for m in record["members"]) == pytest.approx(1.0)
    assert (out / "ensemble_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # val rates = the weighted mean of the members' val rates, smoothed as recorded
    members = [(Path(m["checkpoint_path"]), m["weight"]) for m in record["members"]]
    expect = ens.smooth_rates(ens.weighted_mean_rates([p / "rates_val.h5" for p, _ in members],
                                                      [w for _, w in members]), smoothing["sd_bins"])
    got = load_rates(out / "rates_val.h5")
    for k in RATE_KEYS:
        np.testing.assert_array_equal(got[k], expect[k])
    with h5py.File(out / f"{KEY}_submission.h5") as f:
        assert list(f.keys()) == [KEY]
        assert sorted(f[KEY].keys()) == sorted(RATE_KEYS)
        assert all(f[KEY][k].dtype == np.float32 for k in RATE_KEYS)
        assert f[KEY]["train_rates_heldin"].shape == shapes_from_registry(KEY)["train_rates_heldin"]


def test_build_ensemble_cli_default_experiment_and_topn_size(experiment, tmp_path):
    root = experiment["root"]
    r = run_cli("build_ensemble.py", KEY, "--method", "topn", "--size", "2", "--targets", experiment["val_targets"],
                "--folds", "0", "--smooth-ms", "0", env_root=root)
    assert r.returncode == 0, r.stderr
    out = root / "submissions" / KEY
    record = json.loads((out / "ensemble.json").read_text())
    ranked = ens.read_checkpoints_csv(experiment["experiment"])
    assert [m["trial_id"] for m in record["members"]] == [c.trial_id for c in ranked[:2]]
    assert [m["weight"] for m in record["members"]] == [0.5, 0.5]
    # --smooth-ms 0: the plain 2021 top-N mean, byte for byte
    assert record["smoothing"] is None
    expect = ens.weighted_mean_rates([c.rates_test for c in ranked[:2]], [0.5, 0.5])
    with h5py.File(out / f"{KEY}_submission.h5") as f:
        for k in RATE_KEYS:
            np.testing.assert_array_equal(f[KEY][k][()], expect[k])
    assert record["greedy"] is None and record["method"] == "topn"


def test_an_interrupted_rebuild_leaves_no_stale_ensemble_json(experiment, tmp_path):
    out = tmp_path / "sub"
    args = [KEY, "--experiment", experiment["experiment"], "--targets", experiment["val_targets"], "--out", out,
            "--folds", "0", "--method", "topn", "--smooth-ms", "0"]
    assert run_cli("build_ensemble.py", *args, "--size", "1", env_root=tmp_path).returncode == 0
    assert (out / "ensemble.json").is_file()
    (out / "ensemble_curve.png").unlink()
    (out / "ensemble_curve.png").mkdir()  # the plot cannot be written: the run dies after the submission
    r = run_cli("build_ensemble.py", *args, "--size", "3", env_root=tmp_path)
    assert r.returncode == 2 and "ensemble_curve.png" in r.stderr and "Traceback" not in r.stderr
    record = ens.read_checkpoints_csv(experiment["experiment"])
    three = ens.weighted_mean_rates([c.path / "rates_test.h5" for c in record[:3]], [1 / 3] * 3)
    got = sub.read_submission(out / f"{KEY}_submission.h5")[KEY]
    np.testing.assert_allclose(got["eval_rates_heldout"], three["eval_rates_heldout"], rtol=1e-6)  # the new one
    assert not (out / "ensemble.json").exists()  # so nothing pairs it with the size-1 record


def test_build_ensemble_cli_errors(experiment, tmp_path):
    r = run_cli("build_ensemble.py", KEY, "--experiment", tmp_path, "--targets", experiment["val_targets"])
    assert r.returncode == 2 and "error: " in r.stderr and "checkpoints.csv" in r.stderr
    r = run_cli("build_ensemble.py", "mc_mazz", "--experiment", experiment["experiment"])
    assert r.returncode == 2 and "mc_mazz" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("build_ensemble.py", KEY, "--experiment", experiment["experiment"], "--targets", tmp_path / "no.h5")
    assert r.returncode == 2 and "--targets" in r.stderr
    r = run_cli("build_ensemble.py", KEY, "--size", "zero")
    assert r.returncode == 2 and "--size" in r.stderr
    r = run_cli("build_ensemble.py", KEY, "--smooth-ms", "-5")
    assert r.returncode == 2 and "--smooth-ms" in r.stderr and "Traceback" not in r.stderr


def test_screened_greedy_picks_like_exhaustive_greedy(experiment):
    library, scorer = ens.build_library(experiment["experiment"], experiment["spikes"], max_models=8)
    R, tot = scorer.matrices()
    full = _Subset(scorer, R, tot, None)
    exhaustive = full.greedy_path(2, 25, batch=None)
    assert full.greedy_path(2, 25, batch=3) == exhaustive
    # and each exhaustive pick really is the best next model
    counts = np.bincount(exhaustive[:10], minlength=len(library)).astype(float)
    nxt = exhaustive[10]
    scores = [full.score_counts(counts + np.eye(len(library))[k]) for k in range(len(library))]
    assert scores[nxt] == pytest.approx(max(scores), abs=1e-12)
