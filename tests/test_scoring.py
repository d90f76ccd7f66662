import numpy as np
import pytest

from nlbpipe.rates import RATE_KEYS, load_rates, save_rates
from nlbpipe.scoring import ScoringError, co_bps, co_bps_torch, evaluate_rates


def _problem(seed=0, n_train=40, n_eval=20, bins=30, n_in=8, n_out=4, fwd=5):
    """Rates with trial-varying structure, the spikes drawn from them, and a hand-made target dict."""
    rng = np.random.default_rng(seed)
    n = n_train + n_eval
    latent = np.cumsum(rng.normal(size=(n, bins + fwd, 2)), axis=1) * 0.2
    w = rng.normal(size=(2, n_in + n_out))
    rates = np.exp(latent @ w - 1.0)
    spikes = rng.poisson(rates).astype(float)
    behavior = rates[:, :bins] @ rng.normal(size=(n_in + n_out, 2))  # linearly decodable from rates
    tr, ev = slice(0, n_train), slice(n_train, n)
    rate_dict = {
        "train_rates_heldin": rates[tr, :bins, :n_in],
        "train_rates_heldout": rates[tr, :bins, n_in:],
        "eval_rates_heldin": rates[ev, :bins, :n_in],
        "eval_rates_heldout": rates[ev, :bins, n_in:],
        "eval_rates_heldin_forward": rates[ev, bins:, :n_in],
        "eval_rates_heldout_forward": rates[ev, bins:, n_in:],
    }
    targets = {
        "mc_rtt": {
            "eval_spikes_heldout": spikes[ev, :bins, n_in:],
            "train_behavior": behavior[tr],
            "eval_behavior": behavior[ev],
            "eval_spikes_heldin_forward": spikes[ev, bins:, :n_in],
            "eval_spikes_heldout_forward": spikes[ev, bins:, n_in:],
        }
    }
    return rate_dict, targets


def test_true_rates_beat_the_mean_and_noise_loses():
    rates, targets = _problem()
    spikes = targets["mc_rtt"]["eval_spikes_heldout"]
    truth = co_bps(rates["eval_rates_heldout"], spikes)
    assert truth > 0.05
    flat = np.broadcast_to(spikes.mean(axis=(0, 1), keepdims=True), spikes.shape)
    assert co_bps(flat, spikes) == pytest.approx(0.0, abs=1e-9)
    noisy = rates["eval_rates_heldout"] * np.random.default_rng(1).gamma(2.0, 0.5, spikes.shape)
    assert co_bps(noisy, spikes) < truth


def test_evaluate_rates_names_every_metric_in_snake_case():
    rates, targets = _problem()
    scores = evaluate_rates("mc_rtt", rates, targets)
    assert set(scores) == {"co_bps", "vel_r2", "fp_bps"}
    assert scores["co_bps"] == pytest.approx(
        co_bps(rates["eval_rates_heldout"], targets["mc_rtt"]["eval_spikes_heldout"])
    )
    assert scores["vel_r2"] > 0.5
    assert scores["fp_bps"] > 0


def test_evaluate_rates_rejects_wrong_key_and_shape():
    rates, targets = _problem()
    with pytest.raises(ScoringError, match="mc_maze"):
        evaluate_rates("mc_maze", rates, targets)
    bad = dict(rates, eval_rates_heldout=rates["eval_rates_heldout"][:, :-1])
    with pytest.raises(ScoringError, match="eval_rates_heldout has shape"):
        evaluate_rates("mc_rtt", bad, targets)


def test_rates_file_round_trip_is_float32_and_names_missing_keys(tmp_path):
    rates, _ = _problem()
    path = save_rates(tmp_path / "rates_val.h5", rates, phase="val")
    back = load_rates(path)
    assert set(back) == set(RATE_KEYS)
    assert all(v.dtype == np.float32 for v in back.values())
    np.testing.assert_allclose(back["eval_rates_heldout"], rates["eval_rates_heldout"], rtol=1e-6)
    with pytest.raises(KeyError, match="eval_rates_heldout_forward"):
        save_rates(tmp_path / "bad.h5", {k: rates[k] for k in RATE_KEYS[:-1]})
    assert not (tmp_path / "bad.h5").exists()
    assert list(tmp_path.glob("*.part")) == []


def test_co_bps_torch_matches_nlb_tools_with_nan_bins_and_zero_rates():
    import torch

    rates, targets = _problem(seed=3)
    spikes = targets["mc_rtt"]["eval_spikes_heldout"].copy()
    r = rates["eval_rates_heldout"].copy()
    spikes[0, :5] = np.nan  # nlb_tools leaves NaN bins out
    r[1, 2, 0] = 0.0  # and counts a zero rate as 1e-9
    expected = co_bps(r, spikes)
    got = co_bps_torch(torch.from_numpy(r), torch.from_numpy(spikes))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    with pytest.raises(ScoringError, match="shape"):
        co_bps_torch(torch.from_numpy(r[:, :-1]), torch.from_numpy(spikes))
