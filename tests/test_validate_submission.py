"""validate_submission.py: format, recompute and score on a file build_ensemble wrote, and on broken copies."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_ensemble import KEY, make_experiment, run_cli

from nlbpipe import ensemble as ens
from nlbpipe import submission as sub
from nlbpipe.rates import RATE_KEYS, load_rates

REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), REPO / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An experiment and the submission build_ensemble's library writes from it."""
    root = tmp_path_factory.mktemp("val")
    exp = make_experiment(root, n_ckpts=5, seed=2)
    result = ens.build_ensemble(exp["experiment"], exp["spikes"], method="both", folds=3, smooth_ms="auto", bin_ms=20)
    paths, _ = ens.write_ensemble(result, exp["experiment"], KEY, root / "sub")
    return dict(exp, **paths)


@pytest.fixture
def env(built, monkeypatch):
    """Point the settings at folders without data, so expected shapes come from the registry."""
    from nlbpipe.settings import get_settings

    root = built["root"]
    monkeypatch.setenv("NLB_HOME", str(root))
    monkeypatch.setenv("NLB_DATA_RAW", str(root / "raw"))
    monkeypatch.setenv("NLB_CACHE_DIR", str(root / "cache"))
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()


def _from_saved(ckpt: Path, batch_size: int = 256) -> dict:
    return load_rates(Path(ckpt) / "rates_test.h5")


def test_format_and_score_pass_on_the_written_file(built, tmp_path):
    r = run_cli("validate_submission.py", KEY, built["submission"], "--score", built["test_targets"], env_root=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "shapes from the dataset registry" in r.stdout and "ok: six float tensors" in r.stdout
    header = next(line for line in r.stdout.splitlines() if "split" in line and "co_bps" in line).split()
    assert header == ["split", "co_bps", "vel_r2", "fp_bps"]
    row = next(line for line in r.stdout.splitlines() if "area2_bump_20_split" in line).split()
    co = float(row[1])
    # the same number nlbpipe.scoring gives on the file's rates
    from nlbpipe.scoring import evaluate_rates
    from nlbpipe.tensors import read_targets_file

    rates = sub.read_submission(built["submission"])[KEY]
    assert co == pytest.approx(evaluate_rates(KEY, rates, read_targets_file(built["test_targets"], KEY))["co_bps"], abs=1e-4)
    assert r.stdout.strip().endswith("PASSED")


def test_recompute_agrees_with_the_written_file(built, env, monkeypatch, capsys):
    monkeypatch.setattr(sub, "infer_test_rates", _from_saved)
    main = _script("validate_submission.py").main
    for source in (built["ensemble_json"], built["ensemble_json"].parent):
        assert main([KEY, str(built["submission"]), "--recompute", str(source)]) == 0
        out = capsys.readouterr().out
        assert "recompute (" in out and out.count(" ok") >= 6 and "MISMATCH" not in out
    # an experiment folder: the ensemble.json beside the submission says which members
    assert main([KEY, str(built["submission"]), "--recompute", str(built["experiment"])]) == 0


def test_recompute_applies_the_recorded_smoothing(built, env, monkeypatch, capsys, tmp_path):
    """The members' noisy rates make build_ensemble smooth; a record without it no longer matches."""
    import json

    monkeypatch.setattr(sub, "infer_test_rates", _from_saved)
    record = json.loads(built["ensemble_json"].read_text())
    assert record["smoothing"]["sd_ms"] > 0
    main = _script("validate_submission.py").main
    assert main([KEY, str(built["submission"]), "--recompute", str(built["ensemble_json"])]) == 0
    assert f"smoothed {record['smoothing']['sd_ms']:g} ms" in capsys.readouterr().out
    unsmoothed = tmp_path / "ensemble.json"
    unsmoothed.write_text(json.dumps(dict(record, smoothing=None)))
    assert main([KEY, str(built["submission"]), "--recompute", str(unsmoothed)]) == 1
    assert "MISMATCH" in capsys.readouterr().out
    unsmoothed.write_text(json.dumps(dict(record, smoothing={"sd_ms": "wide"})))
    assert main([KEY, str(built["submission"]), "--recompute", str(unsmoothed)]) == 2
    assert "'smoothing' needs numeric sd_ms" in capsys.readouterr().err


def test_recompute_names_the_tensor_that_differs(built, env, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sub, "infer_test_rates", _from_saved)
    copy = tmp_path / "s.h5"
    shutil.copy(built["submission"], copy)
    with h5py.File(copy, "r+") as f:
        f[KEY]["eval_rates_heldin"][0, 0, 0] *= 1.01
    code = _script("validate_submission.py").main([KEY, str(copy), "--recompute", str(built["ensemble_json"])])
    out = capsys.readouterr().out
    assert code == 1
    line = next(x for x in out.splitlines() if "eval_rates_heldin " in x)
    assert "MISMATCH" in line and "max rel 0.01" in line
    assert "FAILED" in out


@pytest.mark.parametrize("fault", ["shape", "nan", "negative", "missing_tensor", "missing_group"])
def test_broken_copies_fail_naming_the_fault(built, env, tmp_path, capsys, fault):
    copy = tmp_path / "s.h5"
    shutil.copy(built["submission"], copy)
    with h5py.File(copy, "r+") as f:
        g = f[KEY]
        if fault == "shape":
            data = g["train_rates_heldout"][:, :, :-1]
            del g["train_rates_heldout"]
            g.create_dataset("train_rates_heldout", data=data)
        elif fault == "nan":
            g["eval_rates_heldout"][3, 4, 5] = np.nan
        elif fault == "negative":
            g["eval_rates_heldout_forward"][0, 1, 2] = -1.0
        elif fault == "missing_tensor":
            del g["eval_rates_heldin_forward"]
        elif fault == "missing_group":
            f.move(KEY, "area2_bump")
    code = _script("validate_submission.py").main([KEY, str(copy)])
    out = capsys.readouterr().out
    assert code == 1 and "FAILED" in out
    fails = [x for x in out.splitlines() if x.strip().startswith("FAIL ")]
    assert len(fails) == 1, out
    expect = {
        "shape": f"{KEY}/train_rates_heldout: shape: expected (364, 30, 16), found (364, 30, 15)",
        "nan": f"{KEY}/eval_rates_heldout: values: expected finite rates, found 1 NaN/inf",
        "negative": f"{KEY}/eval_rates_heldout_forward: values: expected non-negative rates, found 1 negative",
        "missing_tensor": f"{KEY}/eval_rates_heldin_forward: missing: expected a float32 dataset of shape (98, 10, 49)",
        "missing_group": f"group '{KEY}' missing",
    }[fault]
    assert expect in fails[0]


def test_cli_exit_codes_for_a_broken_file_and_bad_usage(built, tmp_path):
    copy = tmp_path / "s.h5"
    shutil.copy(built["submission"], copy)
    with h5py.File(copy, "r+") as f:
        del f[KEY]["train_rates_heldin"]
    r = run_cli("validate_submission.py", KEY, copy, env_root=tmp_path)
    assert r.returncode == 1 and "train_rates_heldin: missing" in r.stdout
    r = run_cli("validate_submission.py", "mc_maze_10", copy, env_root=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "mc_maze_10" in r.stderr
    r = run_cli("validate_submission.py", KEY, built["submission"], "--recompute", tmp_path / "nowhere", env_root=tmp_path)
    assert r.returncode == 2 and "--recompute" in r.stderr and "Traceback" not in r.stderr


def test_merge_cli_combines_and_refuses_duplicate_groups(built, tmp_path):
    other = sub.write_submission(tmp_path / "maze.h5", "mc_maze_small_20",
                                 {k: np.full((2, 3, 4), 0.1, np.float32) for k in RATE_KEYS})
    out = tmp_path / "upload.h5"
    r = run_cli("build_ensemble.py", "--merge", out, built["submission"], other, env_root=tmp_path)
    assert r.returncode == 0, r.stderr
    with h5py.File(out) as f:
        assert sorted(f.keys()) == sorted([KEY, "mc_maze_small_20"])
        np.testing.assert_array_equal(f[KEY]["eval_rates_heldout"][()],
                                      sub.read_submission(built["submission"])[KEY]["eval_rates_heldout"])
    dup = tmp_path / "dup.h5"
    r = run_cli("build_ensemble.py", "--merge", dup, built["submission"], other, built["submission"], env_root=tmp_path)
    assert r.returncode == 2 and f"group '{KEY}' is in both" in r.stderr and not dup.exists()


# ------------------------------------------------------------------------------ end to end


def test_end_to_end_train_rank_build_recompute(small_synthetic, tmp_path_factory, monkeypatch):
    """Two real (tiny) training runs → checkpoints.csv → build_ensemble → recompute by inference agrees."""
    pytest.importorskip("nlbpipe.ndt.train")
    from nlbpipe.config import config_from_dict
    from nlbpipe.datasets import resolve
    from nlbpipe.ndt.train import train
    from nlbpipe.ranking import rank_experiment
    from nlbpipe.settings import get_settings

    raw, cache, key = Path(small_synthetic.raw_dir), Path(small_synthetic.cache_dir), small_synthetic.dataset_key
    root = tmp_path_factory.mktemp("e2e")
    exp = root / "results" / key / "e2e"
    for seed in range(2):
        cfg = config_from_dict({
            "data": {"dataset": key, "raw_dir": str(raw), "cache_dir": str(cache)},
            "model": {"num_layers": 1, "hidden_size": 16, "num_heads": 1},
            "train": {"seed": seed, "max_passes": 20, "val_interval_passes": 10, "warmup_passes": 5, "batch_size": 16,
                      "device": "cpu"},
        })
        train(cfg, exp / f"trial_{seed}" / "run")
    rank_experiment(exp)
    for name, value in (("NLB_HOME", root), ("RAY_TUNE_HOME", root / "results"), ("NLB_DATA_RAW", raw),
                        ("NLB_CACHE_DIR", cache), ("NLB_SUBMISSIONS_DIR", root / "submissions")):
        monkeypatch.setenv(name, str(value))
    get_settings.cache_clear()
    try:
        assert _script("build_ensemble.py").main([key, "--folds", "2"]) == 0
        out = root / "submissions" / key
        code = _script("validate_submission.py").main(
            [key, str(out / f"{key}_submission.h5"), "--recompute", str(out / "ensemble.json"),
             "--score", str(resolve(key)[0].test_path(raw).parent / "eval_data_test.h5")])
        assert code == 0
    finally:
        get_settings.cache_clear()
