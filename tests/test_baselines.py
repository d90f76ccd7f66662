import numpy as np
import pytest
from nlb_tools.evaluation import evaluate

from nlbpipe.baselines import ALPHAS, KERN_SDS_MS, smooth_spikes, smoothing_rates, tune_smoothing
from nlbpipe.rates import RATE_KEYS
from nlbpipe.scoring import co_bps
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
    # the flat forward prior: near 0 at full size (-0.05 on the realistic mc_maze_small), lower here,
    # where 5 val trials' mean of sparse units is far from 15 train trials' mean
    assert -1.0 < smooth["[100] fp-bps"] < truth["[100] fp-bps"]


@pytest.mark.parametrize("key", ["mc_maze_small", "mc_maze_small_20"])
def test_tuned_smoothing_is_a_floor_above_zero(key, small_synthetic):
    """On the realistic stand-in, at 5 and 20 ms, the val-tuned baseline scores above zero co-bps.

    (Every dataset's full-size stand-in: benchmarks/synthetic_realism.py --dataset NAME, README.)
    """
    raw, cache = small_synthetic.raw_dir, small_synthetic.cache_dir
    choice = tune_smoothing(key, raw, cache)
    grid = {(sd, a): s for sd, a, s in choice["grid"]}
    assert choice["kern_sd_ms"] in KERN_SDS_MS and choice["alpha"] in ALPHAS
    assert {sd for sd, _ in grid} == set(KERN_SDS_MS) and set(ALPHAS) <= {a for _, a in grid}
    # the widths are searched at the chosen alpha
    assert {sd for sd, a in grid if a == choice["alpha"]} == set(KERN_SDS_MS)
    assert choice["co_bps"] == grid[(choice["kern_sd_ms"], choice["alpha"])] == max(grid.values()) > 0
    # the rates come from the tuned choice (the fixed choice reproduces them exactly)
    t = load_tensors(key, "val", raw, cache)
    rates = smoothing_rates(key, "val", raw, cache)
    fixed = smoothing_rates(key, "val", raw, cache, kern_sd_ms=choice["kern_sd_ms"], alpha=choice["alpha"])
    np.testing.assert_array_equal(rates["eval_rates_heldout"], fixed["eval_rates_heldout"])
    assert co_bps(rates["eval_rates_heldout"], t["eval_spikes_heldout"]) == pytest.approx(choice["co_bps"], abs=1e-5)
    # nlb_tools' fixed default is never better than the choice
    default = smoothing_rates(key, "val", raw, cache, kern_sd_ms=60, alpha=0.1)
    assert co_bps(default["eval_rates_heldout"], t["eval_spikes_heldout"]) <= choice["co_bps"] + 1e-9
