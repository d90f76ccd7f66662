"""Checkpoint -> rates: weights-only reload, identical rates, the six keys, clear errors."""

import numpy as np
import pytest
import torch
from test_train import toy_config, toy_tensors

from nlbpipe.ndt.inference import InferenceError, load_checkpoint, predict_rates, write_checkpoint_rates
from nlbpipe.ndt.train import train
from nlbpipe.rates import RATE_KEYS, load_rates


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("inference") / "run"
    tensors = toy_tensors()
    result = train(toy_config(**{"train.max_passes": 14, "model.context_backward": 4, "model.position": "sinusoidal"}),
                   run_dir, tensors=tensors)
    return result, tensors


def test_reload_gives_identical_rates(trained):
    result, tensors = trained
    ckpt = result.checkpoints["best_co_bps"]
    model, cfg = load_checkpoint(ckpt)
    assert not model.training and cfg.model.context_backward == 4
    rates = predict_rates(model, tensors, batch_size=7)  # batching must not matter
    stored = load_rates(ckpt / "rates_val.h5")
    assert set(rates) == set(RATE_KEYS)
    for key in RATE_KEYS:
        assert rates[key].dtype == np.float32
        np.testing.assert_array_equal(rates[key], stored[key])
    again, _ = load_checkpoint(ckpt)
    np.testing.assert_array_equal(predict_rates(again, tensors)["eval_rates_heldout"], rates["eval_rates_heldout"])


def test_rate_shapes_and_values(trained):
    result, tensors = trained
    model, _ = load_checkpoint(result.checkpoints["best_masked_loss"])
    rates = predict_rates(model, tensors)
    assert rates["train_rates_heldin"].shape == (40, 30, 12) and rates["train_rates_heldout"].shape == (40, 30, 5)
    assert rates["eval_rates_heldin"].shape == (16, 30, 12) and rates["eval_rates_heldout"].shape == (16, 30, 5)
    assert rates["eval_rates_heldin_forward"].shape == (16, 6, 12)
    assert rates["eval_rates_heldout_forward"].shape == (16, 6, 5)
    assert all((r > 0).all() and np.isfinite(r).all() for r in rates.values())
    # expected counts per bin: on the scale of the data
    assert 0.2 < rates["eval_rates_heldout"].mean() / tensors["eval_spikes_heldout"].mean() < 5


def test_predictions_ignore_heldout_and_forward_inputs(trained):
    """Rates depend only on held-in spikes: a test-phase dict without held-out data gives the same numbers."""
    result, tensors = trained
    model, _ = load_checkpoint(result.checkpoints["best_co_bps"])
    slim = {k: tensors[k] for k in ("train_spikes_heldin", "eval_spikes_heldin")}
    a, b = predict_rates(model, tensors), predict_rates(model, slim)
    assert all(np.array_equal(a[k], b[k]) for k in RATE_KEYS)


def test_write_checkpoint_rates_for_both_phases(trained, tmp_path):
    result, tensors = trained
    test = {k: v for k, v in toy_tensors(n_train=56, n_val=9, seed=2).items()
            if k.startswith("train_") or k == "eval_spikes_heldin"}
    ckpt = result.checkpoints["best_unmasked_loss"]
    write_checkpoint_rates(ckpt, tensors, test)
    rates = load_rates(ckpt / "rates_test.h5")
    assert rates["train_rates_heldin"].shape == (56, 30, 12) and rates["eval_rates_heldout_forward"].shape == (9, 6, 5)


def test_errors_name_the_file_or_key(trained, tmp_path):
    result, tensors = trained
    with pytest.raises(InferenceError, match="model.pt"):
        load_checkpoint(tmp_path)
    model, _ = load_checkpoint(result.checkpoints["best_co_bps"])
    with pytest.raises(InferenceError, match="eval_spikes_heldin"):
        predict_rates(model, {"train_spikes_heldin": tensors["train_spikes_heldin"]})
    with pytest.raises(InferenceError, match=r"train_spikes_heldin has shape \(40, 30, 11\)"):
        predict_rates(model, {"train_spikes_heldin": tensors["train_spikes_heldin"][:, :, :11],
                              "eval_spikes_heldin": tensors["eval_spikes_heldin"]})
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.yaml").write_text((result.checkpoints["best_co_bps"] / "config.yaml").read_text())
    torch.save({"dims": object()}, pickled / "model.pt")  # not weights-only loadable
    with pytest.raises(InferenceError, match="not a loadable state_dict"):
        load_checkpoint(pickled)


def test_input_smoothing_survives_the_checkpoint(tmp_path):
    """A run with smoothed input reloads to the same rates (the kernel is rebuilt from the config's
    ms and its dataset key's bin size); a dataset name with no bin size is refused by key."""
    from nlbpipe.ndt.train import TrainError

    tensors = toy_tensors()
    cfg = toy_config(**{"train.max_passes": 4, "model.input_smooth_ms": 25.0, "data.dataset": "mc_maze_small_20"})
    result = train(cfg, tmp_path / "run", tensors=tensors)
    ckpt = result.checkpoints["best_co_bps"]
    model, _ = load_checkpoint(ckpt)
    assert model.input_smoothing is not None and model.input_smoothing.radius == 4  # 1.25 bins of 20 ms
    np.testing.assert_array_equal(predict_rates(model, tensors)["eval_rates_heldout"],
                                  load_rates(ckpt / "rates_val.h5")["eval_rates_heldout"])
    bad = toy_config(**{"model.input_smooth_ms": 25.0, "data.dataset": "my_maze"})
    with pytest.raises(TrainError, match="data.dataset"):
        train(bad, tmp_path / "bad", tensors=tensors)
