"""The EvalAI file format: write, merge, expected shapes, format check, comparison, member resolution."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from nlbpipe import submission as sub
from nlbpipe.rates import RATE_KEYS, save_rates


def registry_rates(key: str, value: float = 0.1) -> dict:
    return {k: np.full(s, value, np.float32) for k, s in sub.shapes_from_registry(key).items()}


def test_registry_shapes_follow_nlb_params():
    s = sub.shapes_from_registry("mc_maze")
    assert s["train_rates_heldin"] == (1721 + 574, 140, 137)
    assert s["train_rates_heldout"] == (2295, 140, 45)
    assert s["eval_rates_heldout"] == (574, 140, 45)
    assert s["eval_rates_heldin_forward"] == (574, 40, 137)
    s20 = sub.shapes_from_registry("mc_maze_20")
    assert s20["eval_rates_heldout_forward"] == (574, 10, 45) and s20["train_rates_heldin"][1] == 35
    assert sub.shapes_from_registry("dmfc_rsg")["eval_rates_heldin"] == (283, 300, 40)
    assert sub.shapes_from_registry("mc_rtt_20")["train_rates_heldout"] == (1080, 30, 32)
    with pytest.raises(sub.SubmissionError, match="mc_mazz"):
        sub.shapes_from_registry("mc_mazz")


def test_shapes_from_tensors_use_train_heldout_for_hidden_eval_heldout():
    tensors = {
        "train_spikes_heldin": np.zeros((7, 12, 5)), "train_spikes_heldout": np.zeros((7, 12, 2)),
        "eval_spikes_heldin": np.zeros((3, 12, 5)), "train_spikes_heldin_forward": np.zeros((7, 4, 5)),
    }
    s = sub.shapes_from_tensors(tensors)
    assert s["eval_rates_heldout"] == (3, 12, 2) and s["eval_rates_heldout_forward"] == (3, 4, 2)
    del tensors["train_spikes_heldin_forward"]
    with pytest.raises(sub.SubmissionError, match="train_spikes_heldin_forward"):
        sub.shapes_from_tensors(tensors)


def test_group_names_are_evalai_s():
    assert sub.submission_group("mc_maze_small_20") == "mc_maze_small_20"
    with pytest.raises(sub.SubmissionError, match="not an EvalAI submission group"):
        sub.submission_group("mc_maze_10")


def test_written_file_passes_the_check(tmp_path):
    rates = registry_rates("mc_maze_small_20")
    path = sub.write_submission(tmp_path / "s.h5", "mc_maze_small_20", rates)
    expected = sub.shapes_from_registry("mc_maze_small_20")
    assert sub.check_submission(path, "mc_maze_small_20", expected) == []
    back = sub.read_submission(path)
    assert list(back) == ["mc_maze_small_20"] and back["mc_maze_small_20"]["eval_rates_heldin"].dtype == np.float32


@pytest.mark.parametrize(
    "fault, pattern",
    [
        ("shape", r"mc_maze_small_20/eval_rates_heldout: shape: expected \(100, 35, 35\), found \(100, 35, 34\)"),
        ("nan", r"mc_maze_small_20/train_rates_heldin: values: expected finite rates, found 1 NaN/inf"),
        ("negative", r"mc_maze_small_20/eval_rates_heldin_forward: values: expected non-negative rates, found 1 negative"),
        ("missing_tensor", r"mc_maze_small_20/eval_rates_heldout_forward: missing: expected a float32 dataset of shape \(100, 10, 35\)"),
        ("missing_group", r"group 'mc_maze_small_20' missing.*found mc_maze_small$"),
        ("int", r"mc_maze_small_20/train_rates_heldout: dtype: expected float \(float32\), found int64"),
        ("float64", r"mc_maze_small_20/train_rates_heldout: dtype: expected float32, found float64"),
        ("float16", r"mc_maze_small_20/train_rates_heldout: dtype: expected float32, found float16"),
        ("extra_group", r"unexpected group\(s\) mc_rtt beside 'mc_maze_small_20'"),
    ],
)
def test_check_names_each_fault(tmp_path, fault, pattern):
    key = "mc_maze_small_20"
    rates = registry_rates(key)
    if fault == "shape":
        rates["eval_rates_heldout"] = rates["eval_rates_heldout"][..., :34]
    elif fault == "nan":
        rates["train_rates_heldin"][0, 0, 0] = np.nan
    elif fault == "negative":
        rates["eval_rates_heldin_forward"][1, 2, 3] = -0.5
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("mc_maze_small" if fault == "missing_group" else key)
        for k, v in rates.items():
            if fault == "missing_tensor" and k == "eval_rates_heldout_forward":
                continue
            dtype = {"int": np.int64, "float64": np.float64, "float16": np.float16}.get(fault, np.float32)
            g.create_dataset(k, data=v.astype(dtype) if k == "train_rates_heldout" else v)
        if fault == "extra_group":
            f.create_group("mc_rtt").create_dataset("train_rates_heldin", data=np.zeros((1, 1, 1), np.float32))
    problems = sub.check_submission(path, key, sub.shapes_from_registry(key))
    assert len(problems) == 1, problems
    assert __import__("re").search(pattern, problems[0]), problems[0]


def test_check_on_a_non_hdf5_file(tmp_path):
    path = tmp_path / "s.h5"
    path.write_text("not hdf5")
    problems = sub.check_submission(path, "mc_maze", sub.shapes_from_registry("mc_maze"))
    assert len(problems) == 1 and "not a readable HDF5 file" in problems[0]


def _tiny_submission(path: Path, key: str) -> Path:
    rates = {k: np.full((2, 3, 4), 0.2, np.float32) for k in RATE_KEYS}
    return sub.write_submission(path, key, rates)


def test_merge_combines_groups_and_refuses_duplicates(tmp_path):
    a = _tiny_submission(tmp_path / "a.h5", "mc_maze")
    b = _tiny_submission(tmp_path / "b.h5", "mc_rtt_20")
    out = tmp_path / "all.h5"
    sources = sub.merge_submissions(out, [a, b])
    assert sources == {"mc_maze": a, "mc_rtt_20": b}
    merged = sub.read_submission(out)
    assert sorted(merged) == ["mc_maze", "mc_rtt_20"]
    assert sorted(merged["mc_rtt_20"]) == sorted(RATE_KEYS)
    c = _tiny_submission(tmp_path / "c.h5", "mc_maze")
    out2 = tmp_path / "dup.h5"
    with pytest.raises(sub.SubmissionError, match=r"group 'mc_maze' is in both .*a\.h5 and .*c\.h5"):
        sub.merge_submissions(out2, [a, c])
    assert not out2.exists()
    with pytest.raises(sub.SubmissionError, match="also an input"):
        sub.merge_submissions(a, [a, b])


@pytest.mark.parametrize("fault, message", [
    ("nan", "mc_rtt/eval_rates_heldout: values: expected finite rates, found 1 NaN/inf"),
    ("int", "mc_rtt/eval_rates_heldout: dtype: expected float (float32), found int32"),
    ("incomplete", "mc_rtt/eval_rates_heldout: missing: expected a float32 dataset"),
])
def test_merge_refuses_nan_integer_and_incomplete_files(tmp_path, fault, message):
    a = _tiny_submission(tmp_path / "a.h5", "mc_maze")
    b = _tiny_submission(tmp_path / "b.h5", "mc_rtt")
    with h5py.File(b, "r+") as f:
        data = f["mc_rtt/eval_rates_heldout"][()]
        del f["mc_rtt/eval_rates_heldout"]
        if fault == "nan":
            data[0, 1, 2] = np.nan
            f["mc_rtt"].create_dataset("eval_rates_heldout", data=data)
        elif fault == "int":
            f["mc_rtt"].create_dataset("eval_rates_heldout", data=data.astype(np.int32))
    out = tmp_path / "all.h5"
    with pytest.raises(sub.SubmissionError) as err:
        sub.merge_submissions(out, [a, b])
    assert message in str(err.value) and str(b) in str(err.value)
    assert not out.exists()


def test_score_refuses_a_submission_given_as_the_targets(tmp_path):
    a = _tiny_submission(tmp_path / "a.h5", "mc_maze")
    b = _tiny_submission(tmp_path / "b.h5", "mc_maze")
    with pytest.raises(sub.SubmissionError, match=r"--score .*b\.h5: group 'mc_maze' holds no eval_spikes_heldout"):
        sub.score_submission(a, b)


def test_compare_rates_reports_max_abs_and_rel_per_tensor():
    rng = np.random.default_rng(0)
    ref = {k: rng.uniform(0.1, 1.0, (3, 4, 5)).astype(np.float32) for k in RATE_KEYS}
    close = {k: v * (1 + 5e-6) for k, v in ref.items()}
    assert all(d.ok for d in sub.compare_rates(ref, close))
    off = dict(close)
    off["eval_rates_heldout"] = ref["eval_rates_heldout"].copy()
    off["eval_rates_heldout"][1, 2, 3] *= 1.001
    diffs = {d.key: d for d in sub.compare_rates(ref, off)}
    bad = diffs["eval_rates_heldout"]
    assert not bad.ok and bad.max_rel == pytest.approx(1e-3, rel=1e-3)
    assert bad.max_abs == pytest.approx(ref["eval_rates_heldout"][1, 2, 3] * 1e-3, rel=1e-3)
    assert "MISMATCH" in bad.line() and all(d.ok for k, d in diffs.items() if k != "eval_rates_heldout")
    missing = dict(ref)
    del missing["train_rates_heldin"]
    d = {d.key: d for d in sub.compare_rates(ref, missing)}["train_rates_heldin"]
    assert not d.ok and "missing in the submission" in d.note
    wrong = dict(ref, eval_rates_heldin=ref["eval_rates_heldin"][:2])
    d = {d.key: d for d in sub.compare_rates(ref, wrong)}["eval_rates_heldin"]
    assert not d.ok and "shape" in d.note


def _ckpt_dirs(tmp_path: Path, n: int = 3):
    exp = tmp_path / "exp"
    rng = np.random.default_rng(1)
    rows, rates = [], []
    for i in range(n):
        rel = f"trial_{i}/checkpoints/best_co_bps"
        (exp / rel).mkdir(parents=True)
        r = {k: rng.uniform(0.1, 1, (2, 3, 4)).astype(np.float32) for k in RATE_KEYS}
        save_rates(exp / rel / "rates_test.h5", r)
        rates.append(r)
        rows.append(f"t{i},best_co_bps,{rel},{0.3 - 0.01 * i}")
    (exp / "checkpoints.csv").write_text("trial_id,kind,checkpoint_dir,val_co_bps\n" + "\n".join(rows) + "\n")
    return exp, rates


def _from_saved(ckpt: Path) -> dict:
    from nlbpipe.rates import load_rates

    return load_rates(ckpt / "rates_test.h5")


def test_recompute_from_experiment_top_n_matches_a_top_n_file(tmp_path):
    exp, rates = _ckpt_dirs(tmp_path)
    members = sub.resolve_ensemble(exp, tmp_path / "s.h5", size=2)
    assert members.smoothing.sd_ms == 0
    assert [m.label for m in members.members] == ["t0/best_co_bps", "t1/best_co_bps"]
    rebuilt = sub.recompute_rates(members, predict=_from_saved)
    expected = {k: ((rates[0][k].astype(np.float64) + rates[1][k]) / 2).astype(np.float32) for k in RATE_KEYS}
    assert all(d.ok for d in sub.compare_rates(rebuilt, expected, rtol=1e-6))
    with pytest.raises(sub.SubmissionError, match="--size N"):
        sub.resolve_ensemble(exp, tmp_path / "s.h5")
    with pytest.raises(sub.SubmissionError, match="--size 4"):
        sub.resolve_ensemble(exp, tmp_path / "s.h5", size=4)


def test_recompute_from_ensemble_json_uses_recorded_weights(tmp_path):
    exp, rates = _ckpt_dirs(tmp_path)
    record = {"experiment_dir": str(exp), "members": [
        {"trial_id": "t2", "kind": "best_co_bps", "checkpoint_dir": "trial_2/checkpoints/best_co_bps", "weight": 0.75},
        {"trial_id": "t0", "kind": "best_co_bps", "checkpoint_dir": "trial_0/checkpoints/best_co_bps", "weight": 0.25},
    ]}
    (tmp_path / "ensemble.json").write_text(json.dumps(record))
    members = sub.resolve_ensemble(tmp_path / "ensemble.json", tmp_path / "s.h5")
    rebuilt = sub.recompute_rates(members, predict=_from_saved)
    for k in RATE_KEYS:
        np.testing.assert_allclose(rebuilt[k], 0.75 * rates[2][k] + 0.25 * rates[0][k], rtol=1e-6)
    # an experiment folder resolves through the ensemble.json beside the submission that names it
    assert [m.label for m in sub.resolve_ensemble(exp, tmp_path / "s.h5").members] == ["t2/best_co_bps", "t0/best_co_bps"]
    record["members"][0]["checkpoint_dir"] = "gone"
    (tmp_path / "ensemble.json").write_text(json.dumps(record))
    with pytest.raises(sub.SubmissionError, match="t2/best_co_bps: checkpoint folder .*gone not found"):
        sub.recompute_rates(sub.resolve_ensemble(tmp_path / "ensemble.json", tmp_path / "s.h5"), predict=_from_saved)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(sub.SubmissionError, match="bad.json is not a readable ensemble.json"):
        sub.resolve_ensemble(tmp_path / "bad.json", tmp_path / "s.h5")


def test_metrics_table_lays_out_the_splits():
    lines = sub.metrics_table([("mc_maze_split", {"co_bps": 0.35, "vel_r2": 0.9, "fp_bps": 0.2})])
    assert lines[0].split() == ["split", "co_bps", "vel_r2", "fp_bps"]
    assert "0.3500" in lines[1] and "0.9000" in lines[1]
