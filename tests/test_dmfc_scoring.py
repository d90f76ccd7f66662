"""dmfc_rsg scored as NLB scores it: training's co-bps is nlb_tools.evaluation's on the eval targets,
and a NaN (unrecorded) input count never spreads into rates."""

from __future__ import annotations

import json

import numpy as np

from nlbpipe.config import RunConfig, apply_overrides
from nlbpipe.ndt.train import train
from nlbpipe.rates import load_rates
from nlbpipe.scoring import co_bps, evaluate_rates
from nlbpipe.synthetic import write_synthetic
from nlbpipe.tensors import SCORED_KEY, load_eval_targets, load_tensors


def _config(**overrides) -> RunConfig:
    base = {"train.batch_size": 16, "train.lr": 5e-3, "train.warmup_updates": 10, "train.max_updates": 40,
            "train.val_interval": 20, "train.patience": -1, "train.num_threads": 1, "model.num_layers": 1,
            "model.hidden_size": 32, "model.dropout": 0.1, "model.dropout_rates": 0.1,
            "model.dropout_embedding": 0.1}
    base.update(overrides)
    return apply_overrides(RunConfig(), base)


def test_dmfc_training_co_bps_is_nlb_tools_evaluate(tmp_path):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    write_synthetic("dmfc_rsg", raw, seed=0, scale=0.01, targets=False)
    tensors = load_tensors("dmfc_rsg", "val", raw, cache)
    targets = load_eval_targets("dmfc_rsg", "val", raw, cache)
    scored = tensors[SCORED_KEY]
    np.testing.assert_array_equal(scored, targets["dmfc_rsg"]["eval_spikes_heldout"].astype(np.float32))
    # nlb_tools scores set..go only: the target is NaN before set, the input covers -1500..0 ms
    assert np.isnan(scored).any() and not np.isnan(tensors["eval_spikes_heldout"]).any()
    result = train(_config(), tmp_path / "run", tensors=tensors)
    ckpt = result.checkpoints["best_co_bps"]
    logged = json.loads((ckpt / "metrics.json").read_text())["val_co_bps"]
    rates = load_rates(ckpt / "rates_val.h5")
    official = evaluate_rates("dmfc_rsg", rates, targets)["co_bps"]
    assert abs(logged - official) < 1e-6
    # and the whole-window input spikes would have scored something else
    assert abs(co_bps(rates["eval_rates_heldout"], tensors["eval_spikes_heldout"]) - official) > 1e-4


def test_nan_inputs_do_not_spread_into_rates(tmp_path):
    from test_train import toy_config, toy_tensors

    from nlbpipe.ndt.inference import load_checkpoint, predict_rates

    tensors = toy_tensors()
    for key in ("train_spikes_heldin", "eval_spikes_heldin", "train_spikes_heldout"):
        tensors[key] = tensors[key].copy()
        tensors[key][:, :5] = np.nan  # unrecorded bins at each trial's start
    result = train(toy_config(), tmp_path / "run", tensors=tensors)
    assert result.status == "completed" and np.isfinite(result.best["val_masked_loss"])
    model, _ = load_checkpoint(result.checkpoints["best_co_bps"])
    rates = predict_rates(model, tensors)
    assert all(np.isfinite(v).all() for v in rates.values())
