import numpy as np
from nlb_tools.evaluation import evaluate

from nlbpipe.baselines import smooth_spikes, smoothing_rates
from nlbpipe.rates import RATE_KEYS
from nlbpipe.synthetic import true_rates
from nlbpipe.tensors import load_eval_targets, load_tensors


def test_smooth_spikes_keeps_mass_and_spreads_it():
    x = np.zeros((1, 41, 1))
    x[0, 20, 0] = 1.0
    y = smooth_spikes(x, kern_sd_ms=20, bin_ms=5)
    assert abs(y.sum() - 1.0) < 1e-6
    assert y[0, 20, 0] == y.max() < 0.2 and y[0, 16, 0] > 0


def test_smoothing_baseline_scores_between_nothing_and_truth(small_synthetic):
    fx = small_synthetic
    key = fx.dataset_key
    # alpha=1: the fixture has 15 train trials; nlb_tools' alpha=0.1 (tuned on 75) overfits them
    rates = smoothing_rates(key, "val", fx.raw_dir, fx.cache_dir, alpha=1.0)
    t = load_tensors(key, "val", fx.raw_dir, fx.cache_dir)
    assert set(rates) == set(RATE_KEYS)
    assert rates["train_rates_heldout"].shape == t["train_spikes_heldout"].shape
    assert rates["eval_rates_heldout"].shape == t["eval_spikes_heldout"].shape
    assert rates["eval_rates_heldin_forward"].shape == t["eval_spikes_heldin_forward"].shape
    assert all(v.dtype == np.float32 and np.all(v >= 0) and np.all(np.isfinite(v)) for v in rates.values())
    targets = load_eval_targets(key, "val", fx.raw_dir, fx.cache_dir)
    smooth = evaluate(targets, {key: rates})[0]["mc_maze_scaling_split"]
    truth = evaluate(targets, {key: true_rates(key, "val", fx.raw_dir)})[0]["mc_maze_scaling_split"]
    assert 0 < smooth["[100] co-bps"] < truth["[100] co-bps"]
    assert smooth["[100] vel R2"] < truth["[100] vel R2"]
    assert -0.2 < smooth["[100] fp-bps"] < truth["[100] fp-bps"]
