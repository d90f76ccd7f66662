"""checkpoints.csv: every kept checkpoint of finished trials, scored on val by nlbpipe.scoring from
its rates_val.h5 (computed when missing), sorted by val co-bps; running trials left out."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from nlbpipe.config import apply_overrides, config_from_dict
from nlbpipe.ranking import rank_experiment
from nlbpipe.rates import load_rates
from nlbpipe.scoring import evaluate_rates
from nlbpipe.tensors import load_eval_targets


@pytest.fixture(scope="module")
def trained_run(small_synthetic, tmp_path_factory):
    """One real (tiny) training run with its three kept checkpoints."""
    from nlbpipe.ndt.train import train

    cfg = apply_overrides(config_from_dict({}), {
        "data.dataset": small_synthetic.dataset_key, "data.raw_dir": str(small_synthetic.raw_dir),
        "data.cache_dir": str(small_synthetic.cache_dir), "model.num_layers": 1, "model.hidden_size": 16,
        "train.max_updates": 30, "train.val_interval": 10, "train.batch_size": 8, "train.warmup_updates": 5,
        "train.num_threads": 1})
    run_dir = tmp_path_factory.mktemp("ranking") / "run"
    result = train(cfg, run_dir)
    assert result.checkpoints
    return run_dir


def _experiment(tmp_path, trained_run, trials: dict[str, dict]):
    exp = tmp_path / "exp"
    for trial_id, params in trials.items():
        shutil.copytree(trained_run, exp / f"trial_{trial_id}" / "run")
        (exp / f"trial_{trial_id}" / "params.json").write_text(json.dumps(params))
    return exp


def test_every_kept_checkpoint_is_scored_and_sorted(tmp_path, trained_run, small_synthetic):
    exp = _experiment(tmp_path, trained_run, {"aaa": {"train.lr": 1e-3}, "bbb": {"train.lr": 2e-4}})
    # make trial bbb's rates differ, and drop one rates_val.h5 so ranking must run inference
    ckpts_b = sorted((exp / "trial_bbb" / "run" / "checkpoints").iterdir())
    from nlbpipe.rates import save_rates

    worse = {k: v * 1.5 for k, v in load_rates(ckpts_b[0] / "rates_val.h5").items()}
    save_rates(ckpts_b[0] / "rates_val.h5", worse)
    missing = exp / "trial_aaa" / "run" / "checkpoints" / "best_co_bps" / "rates_val.h5"
    missing.unlink()

    result = rank_experiment(exp)
    table = pd.read_csv(exp / "checkpoints.csv")
    kept = sorted(p.relative_to(exp).as_posix() for p in exp.glob("trial_*/run/checkpoints/*")
                  if (p / "model.pt").is_file())
    assert sorted(table["checkpoint_dir"]) == kept and result.n_checkpoints == len(kept) == 6
    assert missing.is_file()  # computed through nlbpipe.ndt.inference
    assert list(table["val_co_bps"]) == sorted(table["val_co_bps"], reverse=True)
    targets = load_eval_targets(small_synthetic.dataset_key, "val", small_synthetic.raw_dir, small_synthetic.cache_dir)
    for _, row in table.iterrows():
        rates = load_rates(exp / row["checkpoint_dir"] / "rates_val.h5")
        expected = evaluate_rates(small_synthetic.dataset_key, rates, targets)
        assert row["val_co_bps"] == pytest.approx(expected["co_bps"])
        assert row["val_psth_r2"] == pytest.approx(expected["psth_r2"])
    assert table.loc[table["trial_id"] == "bbb", "hp/train.lr"].eq(2e-4).all()
    assert list(table.columns[:4]) == ["trial_id", "kind", "checkpoint_dir", "val_co_bps"]
    assert (exp / "search_progress.png").stat().st_size > 1000


def test_running_trials_are_left_out(tmp_path, trained_run):
    exp = _experiment(tmp_path, trained_run, {"done": {"train.lr": 1e-3}, "busy": {"train.lr": 1e-4}})
    status = exp / "trial_busy" / "run" / "status.json"
    status.write_text(json.dumps({**json.loads(status.read_text()), "status": "running"}))
    result = rank_experiment(exp)
    table = pd.read_csv(exp / "checkpoints.csv")
    assert set(table["trial_id"]) == {"done"} and result.skipped_running == ["busy"]
    assert np.isfinite(table["val_co_bps"]).all()
