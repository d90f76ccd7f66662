"""The ensemble's rate smoothing: what it does to rates, and that val co-bps chooses its width."""

from __future__ import annotations

import numpy as np
import pytest

from nlbpipe.ensemble.smoothing import RateSmoothing, choose_smoothing, smooth_log_rates, smooth_rates
from nlbpipe.errors import EnsembleError
from nlbpipe.rates import RATE_KEYS

BINS, FORWARD, HELDIN, HELDOUT = 30, 8, 6, 5


def _rates(rng, trials=40, rough=False):
    """Six tensors of rates per bin: smooth in time (a slow sine per neuron), or i.i.d. from bin to bin."""
    t = np.arange(BINS + FORWARD)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, (trials, 1, HELDIN + HELDOUT))
    rates = 0.2 * np.exp(0.8 * np.sin(2 * np.pi * t / 25 + phase))
    if rough:
        rates = rates * rng.lognormal(0, 0.8, rates.shape)
    hi, ho = rates[..., :HELDIN], rates[..., HELDIN:]
    return {"train_rates_heldin": hi[:, :BINS], "train_rates_heldout": ho[:, :BINS],
            "eval_rates_heldin": hi[:, :BINS], "eval_rates_heldout": ho[:, :BINS],
            "eval_rates_heldin_forward": hi[:, BINS:], "eval_rates_heldout_forward": ho[:, BINS:]}


def test_smoothing_keeps_constant_rates_and_joins_trial_and_forward_bins():
    rng = np.random.default_rng(0)
    flat = np.full((2, 12, 3), 0.3, dtype=np.float32)
    np.testing.assert_allclose(smooth_log_rates(flat, 1.5), flat, rtol=1e-6)
    assert smooth_log_rates(flat, 1.5).dtype == np.float32
    rates = _rates(rng, trials=3, rough=True)
    out = smooth_rates(rates, 1.0)
    assert set(out) == set(RATE_KEYS)
    for part in ("heldin", "heldout"):
        whole = smooth_log_rates(np.concatenate([rates[f"eval_rates_{part}"], rates[f"eval_rates_{part}_forward"]], 1), 1.0)
        np.testing.assert_array_equal(np.concatenate([out[f"eval_rates_{part}"], out[f"eval_rates_{part}_forward"]], 1), whole)
    # smoothing lowers the bin-to-bin variation of the log rates, and sd 0 is the identity
    rough = np.diff(np.log(rates["train_rates_heldout"]), axis=1).std()
    assert np.diff(np.log(out["train_rates_heldout"]), axis=1).std() < 0.5 * rough
    assert smooth_rates(rates, 0) == rates
    with pytest.raises(EnsembleError, match="lack eval_rates_heldin_forward"):
        smooth_rates({k: v for k, v in rates.items() if k != "eval_rates_heldin_forward"}, 1.0)


def test_val_co_bps_chooses_a_width_only_where_the_rates_are_noisy():
    rng = np.random.default_rng(1)
    truth = _rates(rng, trials=200)
    spikes = rng.poisson(truth["eval_rates_heldout"]).astype(float)
    noisy = {k: v * rng.lognormal(0, 0.6, v.shape) for k, v in truth.items()}
    chosen = choose_smoothing(noisy, spikes, bin_ms=20)
    assert chosen.sd_ms > 0 and chosen.bin_ms == 20 and chosen.sd_bins == chosen.sd_ms / 20
    assert chosen.val_co_bps[chosen.sd_ms] > chosen.val_co_bps[0.0] + 0.01
    # rates that really change from bin to bin, and are exactly the spikes' rates: no smoothing
    rough = _rates(rng, trials=200, rough=True)
    spikes = rng.poisson(rough["eval_rates_heldout"]).astype(float)
    assert choose_smoothing(rough, spikes, bin_ms=20).sd_ms == 0
    with pytest.raises(EnsembleError, match="bin size 0 ms"):
        choose_smoothing(noisy, spikes, bin_ms=0)


def test_recorded_smoothing_round_trips_and_bad_records_name_the_file():
    sm = RateSmoothing(15.0, 5, {0.0: 0.1, 15.0: 0.2})
    back = RateSmoothing.from_json(sm.to_json())
    assert (back.sd_ms, back.bin_ms, back.sd_bins) == (15.0, 5, 3.0)
    assert sm.to_json()["chosen_by"] == "val co-bps"
    assert RateSmoothing.from_json(None).sd_bins == 0
    with pytest.raises(EnsembleError, match="x/ensemble.json: 'smoothing' needs numeric"):
        RateSmoothing.from_json({"sd_ms": 10}, where="x/ensemble.json")
    with pytest.raises(EnsembleError, match="sd_ms -1.0"):
        RateSmoothing.from_json({"sd_ms": -1, "bin_ms": 5})
