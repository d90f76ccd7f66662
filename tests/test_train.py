"""One training run: learning, checkpoints, exact resume, divergence, early stopping, the CLI's errors."""

import csv
import json

import numpy as np
import pytest
import torch

from nlbpipe.config import RunConfig, apply_overrides, save_config
from nlbpipe.ndt.train import CHECKPOINT_KINDS, TrainError, _Run, learning_rate, train
from nlbpipe.train import main


def toy_tensors(n_train=40, n_val=16, T=30, F=6, Nh=12, No=5, seed=0):
    """Poisson counts from two shared oscillating latents: held-out neurons are predictable from held-in."""
    rng = np.random.default_rng(seed)
    n, L = n_train + n_val, T + F
    t = np.arange(L)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 2))
    latents = np.concatenate([np.sin(2 * np.pi * t / 20 + phase[..., :1]), np.cos(2 * np.pi * t / 13 + phase[..., 1:])], -1)
    rates = np.exp(-1.0 + 0.8 * latents @ rng.normal(size=(2, Nh + No)))
    spikes = rng.poisson(rates).astype(np.float32)
    out = {}
    for prefix, trials in (("train", slice(0, n_train)), ("eval", slice(n_train, n))):
        s = spikes[trials]
        out[f"{prefix}_spikes_heldin"] = s[:, :T, :Nh]
        out[f"{prefix}_spikes_heldout"] = s[:, :T, Nh:]
        out[f"{prefix}_spikes_heldin_forward"] = s[:, T:, :Nh]
        out[f"{prefix}_spikes_heldout_forward"] = s[:, T:, Nh:]
    return out


def toy_config(**overrides) -> RunConfig:
    # 40 train trials at batch 16: 3 steps a pass
    base = {"train.batch_size": 16, "train.lr": 5e-3, "train.warmup_passes": 7, "train.max_passes": 20,
            "train.val_interval_passes": 10, "train.patience_passes": -1, "train.num_threads": 1, "model.num_layers": 2,
            "model.dropout": 0.1, "model.dropout_rates": 0.1, "model.dropout_embedding": 0.1}
    base.update(overrides)
    return apply_overrides(RunConfig(), base)


def test_a_few_hundred_updates_learn(tmp_path):
    cfg = toy_config(**{"train.max_passes": 80, "train.val_interval_passes": 16})
    seen = []
    result = train(cfg, tmp_path / "run", tensors=toy_tensors(), report=lambda m, p: seen.append((m, p)))
    assert result.status == "completed" and result.step == 240 and result.passes == 80
    first, last = seen[0][0], seen[-1][0]
    assert last["val_masked_loss"] < first["val_masked_loss"]
    assert last["val_unmasked_loss"] < first["val_unmasked_loss"]
    assert result.best["val_co_bps"] > 0.05
    assert [m["pass"] for m, _ in seen] == [16, 32, 48, 64, 80]
    assert [m["step"] for m, _ in seen] == [48, 96, 144, 192, 240]
    for key in ("step", "pass", "train_loss", "val_masked_loss", "val_unmasked_loss", "val_co_bps", "lr",
                "best_val_masked_loss", "best_val_unmasked_loss", "best_val_co_bps"):
        assert key in last
    assert all(p == tmp_path / "run" / "last" and (p / "model.pt").is_file() for _, p in seen)


def test_run_directory_layout(tmp_path):
    run_dir = tmp_path / "run"
    result = train(toy_config(), run_dir, tensors=toy_tensors())
    assert set(result.checkpoints) == set(CHECKPOINT_KINDS)
    for kind in CHECKPOINT_KINDS:
        folder = run_dir / "checkpoints" / kind
        assert result.checkpoints[kind] == folder
        for name in ("model.pt", "config.yaml", "metrics.json", "rates_val.h5"):
            assert (folder / name).is_file(), f"{kind}/{name}"
        assert not (folder / "rates_test.h5").exists()  # no test tensors given
        metrics = json.loads((folder / "metrics.json").read_text())
        assert {"step", "val_masked_loss", "val_unmasked_loss", "val_co_bps"} <= set(metrics)
        state = torch.load(folder / "model.pt", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
    rows = list(csv.DictReader((run_dir / "progress.csv").open()))
    assert [int(r["pass"]) for r in rows] == [10, 20] and [int(r["step"]) for r in rows] == [30, 60]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed" and status["step"] == 60 and status["passes"] == 20
    assert (run_dir / "config.yaml").is_file() and (run_dir / "last" / "state.pt").is_file()
    best = json.loads((run_dir / "checkpoints" / "best_co_bps" / "metrics.json").read_text())
    assert best["val_co_bps"] == max(float(r["val_co_bps"]) for r in rows)


def test_test_rates_written_when_test_tensors_given(tmp_path):
    val = toy_tensors()
    test = {k: v for k, v in toy_tensors(n_train=56, n_val=10, seed=3).items()
            if k.startswith("train_") or k == "eval_spikes_heldin"}
    result = train(toy_config(**{"train.max_passes": 7}), tmp_path / "run", tensors=val, test_tensors=test)
    from nlbpipe.rates import load_rates

    rates = load_rates(result.checkpoints["best_co_bps"] / "rates_test.h5")
    assert rates["train_rates_heldout"].shape == (56, 30, 5) and rates["eval_rates_heldin_forward"].shape == (10, 6, 12)


def test_resume_gives_the_same_result(tmp_path):
    tensors = toy_tensors()
    cfg = toy_config(**{"train.max_passes": 28, "train.val_interval_passes": 7, "train.mask_max_span": 3})
    full = train(cfg, tmp_path / "full", tensors=tensors)

    class Killed(Exception):
        pass

    def kill_at_14(metrics, path):
        if metrics["pass"] == 14:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, tmp_path / "resumed", tensors=tensors, report=kill_at_14)
    steps = []
    resumed = train(cfg, tmp_path / "resumed", tensors=tensors, report=lambda m, p: steps.append(m["pass"]))
    assert steps == [21, 28]  # picked up after the last saved validation
    assert resumed.status == full.status and resumed.step == full.step and resumed.best == full.best
    a = torch.load(tmp_path / "full" / "last" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _progress_without_time(tmp_path / "full") == _progress_without_time(tmp_path / "resumed")
    # a finished run called again returns its result without training
    again = train(cfg, tmp_path / "resumed", tensors=tensors, report=lambda m, p: steps.append(m["pass"]))
    assert again.status == full.status and again.best == full.best and steps == [21, 28]


def _progress_without_time(run_dir):
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in csv.DictReader((run_dir / "progress.csv").open())]


def test_resume_refuses_a_different_config(tmp_path):
    train(toy_config(**{"train.max_passes": 7}), tmp_path / "run", tensors=toy_tensors())
    with pytest.raises(TrainError, match="model.num_layers"):
        train(toy_config(**{"train.max_passes": 7, "model.num_layers": 3}), tmp_path / "run", tensors=toy_tensors())


def test_nan_loss_stops_as_diverged(tmp_path):
    tensors = toy_tensors()
    # an infinite count poisons the loss (a NaN count is an unrecorded bin: zero input, out of the loss)
    tensors["train_spikes_heldout"][:, 3, 0] = np.inf
    result = train(toy_config(), tmp_path / "run", tensors=tensors)
    assert result.status == "diverged" and result.step == 30 and result.passes == 10
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "diverged" and ("nan" in status["message"].lower() or "inf" in status["message"])


def test_early_stopping_on_patience(tmp_path):
    # lr so small the weights cannot change in float32: the val masked loss never improves again
    cfg = toy_config(**{"train.lr": 1e-12, "train.patience_passes": 12, "train.max_passes": 200,
                        "train.val_interval_passes": 3})
    result = train(cfg, tmp_path / "run", tensors=toy_tensors())
    assert result.status == "early_stopped" and result.passes == 15 and result.step == 45
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "early_stopped" and "val masked loss or val co-bps for 12 passes" in status["message"]


@pytest.mark.parametrize("rule, masked_at, co_bps_at, stops", [
    ("masked_loss", 10, 29, True), ("masked_loss", 29, 10, False),
    ("co_bps", 29, 10, True), ("co_bps", 10, 29, False),
    ("both", 29, 10, False), ("both", 10, 29, False), ("both", 10, 12, True)])
def test_early_stopping_watches_the_chosen_metrics(tmp_path, rule, masked_at, co_bps_at, stops):
    """Pass 30, patience 12: a metric last improved at pass 10 has waited 20 passes, at 29 one."""
    cfg = toy_config(**{"train.patience_passes": 12, "train.early_stop": rule})
    run = _Run(cfg, tmp_path, toy_tensors(), torch.device("cpu"))
    run.step = 30 * run.per_pass
    run.best.update(step_masked_loss=masked_at * run.per_pass, step_co_bps=co_bps_at * run.per_pass)
    stop, why = run.should_stop()
    assert stop is stops and (why != "") is stops
    if rule == "both" and stops:
        assert "val masked loss or val co-bps for 18 passes" in why


def test_schedule_warms_up_then_decays():
    cfg = toy_config(**{"train.lr": 1.0, "train.warmup_passes": 10, "train.max_passes": 110})
    lrs = [learning_rate(cfg, s) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.5) and lrs[-1] < 0.01
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    const = toy_config(**{"train.lr_schedule": "constant", "train.warmup_passes": 0})
    assert learning_rate(const, 50) == const.train.lr
    # counted in passes: at 3 steps a pass, the same curve over three times the steps
    assert learning_rate(cfg, 29, 3) == pytest.approx(1.0) and learning_rate(cfg, 14, 3) == pytest.approx(0.5)
    assert all(learning_rate(cfg, 3 * p, 3) == pytest.approx(lrs[p]) for p in range(10, 110, 7))


def test_bad_tensors_name_the_key(tmp_path):
    tensors = toy_tensors()
    del tensors["eval_spikes_heldout_forward"]
    with pytest.raises(TrainError, match="eval_spikes_heldout_forward"):
        train(toy_config(), tmp_path / "a", tensors=tensors)
    tensors = toy_tensors()
    tensors["train_spikes_heldout"] = tensors["train_spikes_heldout"][:, :10]
    with pytest.raises(TrainError, match="train_spikes_heldout"):
        train(toy_config(), tmp_path / "b", tensors=tensors)


def test_cli_config_error_exits_2(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    save_config(RunConfig(), path)
    assert main([str(path), "--set", "model.layers=3", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "model.layers" in err
    path.write_text("train:\n  lr: [1, 2]\n")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "train.lr" in err and str(path) in err


def test_a_run_stopped_by_its_caller_ends_like_an_early_stop(tmp_path):
    """A search's scheduler stops a trial through ``report``: status, kept checkpoints and rates are written."""
    tensors = toy_tensors()
    steps = []

    def scheduler(metrics, last):
        steps.append(metrics["pass"])
        return metrics["pass"] >= 20  # stop at the second validation (of three)

    result = train(toy_config(**{"train.max_passes": 30}), tmp_path / "run", tensors=tensors, test_tensors=tensors,
                   report=scheduler)
    assert result.status == "stopped" and result.passes == 20 and result.step == 60 and steps == [10, 20]
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "stopped" and "scheduler" in status["message"]
    assert result.checkpoints and all((p / "rates_val.h5").is_file() and (p / "rates_test.h5").is_file()
                                      for p in result.checkpoints.values())
    again = train(toy_config(**{"train.max_passes": 30}), tmp_path / "run", tensors=tensors,
                  report=lambda m, p: steps.append(m["pass"]))
    assert again.status == "stopped" and steps == [10, 20]  # final: not trained again


def test_a_run_that_failed_on_its_input_does_not_poison_its_folder(tmp_path):
    tensors = toy_tensors()
    del tensors["eval_spikes_heldout_forward"]
    with pytest.raises(TrainError, match="eval_spikes_heldout_forward"):
        train(toy_config(**{"model.num_layers": 3}), tmp_path / "run", tensors=tensors)
    # the corrected command (another config, good data) runs in the same folder
    result = train(toy_config(**{"train.max_passes": 7}), tmp_path / "run", tensors=toy_tensors())
    assert result.status == "completed"


def test_cli_bad_raw_dir_then_the_corrected_command(tmp_path, capsys, small_synthetic):
    cfg = apply_overrides(RunConfig(), {"data.dataset": "mc_maze_small", "data.raw_dir": str(tmp_path / "typo"),
                                        "data.cache_dir": str(small_synthetic.cache_dir), "train.max_passes": 1,
                                        "train.val_interval_passes": 1, "model.num_layers": 1, "train.num_threads": 1})
    path = tmp_path / "run.yaml"
    save_config(cfg, path)
    run_dir = tmp_path / "r"
    assert main([str(path), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(tmp_path / "typo") in err and len(err.strip().splitlines()) == 1
    assert not (run_dir / "config.yaml").exists()
    save_config(apply_overrides(cfg, {"data.raw_dir": str(small_synthetic.raw_dir)}), path)
    assert main([str(path), "--run-dir", str(run_dir)]) == 0, capsys.readouterr().err
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("readout_bias", ["mean_rate", "zero"])
def test_the_read_out_starts_at_each_neurons_mean_rate(tmp_path, readout_bias):
    """Before any step, mean_rate puts every neuron's predicted rate (on zero input, where only the
    bias and positions act) at its train mean, up to what the random read-out weights add; zero at 1."""
    tensors = toy_tensors()
    run = _Run(toy_config(**{"model.readout_bias": readout_bias}), tmp_path / "run", tensors, torch.device("cpu"))
    counts = np.concatenate([tensors["train_spikes_heldin"], tensors["train_spikes_heldout"]], axis=2)
    mean = counts.reshape(-1, counts.shape[2]).mean(axis=0)
    bias = run.model.readout.bias.detach().numpy()
    if readout_bias == "zero":
        assert np.all(bias == 0)
        return
    np.testing.assert_allclose(np.exp(bias), np.maximum(mean, 1e-3), rtol=1e-5)
    run.model.eval()
    with torch.no_grad():
        rates = torch.exp(run.model(torch.zeros(1, run.layout.trial_bins + run.layout.forward_bins, len(mean))))
    # the read-out weights start small (U(-0.1, 0.1)), so the mean rate sets the scale within a factor 3
    ratio = rates[0].mean(dim=0).numpy() / mean
    assert np.all((ratio > 1 / 3) & (ratio < 3)), ratio
