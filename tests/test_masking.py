"""Masked modelling: proportions, spans, and a loss that sees only masked held-in tokens plus everything hidden."""

import dataclasses

import pytest
import torch

from nlbpipe.config import TrainConfig
from nlbpipe.ndt.masking import Layout, current_span, mask_batch, model_input, poisson_loss, unmasked_loss_mask

LAYOUT = Layout(trial_bins=50, forward_bins=10, n_heldin=40, n_heldout=8)


def counts(b=64, value=3.0):
    return torch.full((b, LAYOUT.trial_bins + LAYOUT.forward_bins, LAYOUT.n_heldin + LAYOUT.n_heldout), value)


def cfg(**kw):
    return dataclasses.replace(TrainConfig(), **kw)


def run_mask(c, span=1, max_count=1000, b=64, seed=0):
    return mask_batch(counts(b), LAYOUT, c, span, max_count, torch.Generator().manual_seed(seed))


def test_timestep_mask_proportions():
    x, loss_mask = run_mask(cfg(mask_ratio=0.25, mask_token_ratio=0.8, mask_random_ratio=0.5))
    T, Nh = LAYOUT.trial_bins, LAYOUT.n_heldin
    masked = loss_mask[:, :T, :Nh]
    # whole bins are masked: every held-in neuron of a bin agrees
    assert (masked == masked[:, :, :1]).all()
    assert abs(masked.float().mean().item() - 0.25) < 0.03
    heldin = x[:, :T, :Nh][masked]
    zeroed = (heldin == 0).float().mean().item()
    kept = (heldin == 3).float().mean().item()
    randomized = 1 - zeroed - kept
    assert abs(zeroed - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(randomized - 0.1) < 0.02
    assert (x[:, :T, :Nh][~masked] == 3).all()  # unmasked held-in tokens are untouched


def test_neuron_mode_masks_whole_channels():
    _, loss_mask = run_mask(cfg(mask_mode="neuron", mask_ratio=0.3))
    masked = loss_mask[:, : LAYOUT.trial_bins, : LAYOUT.n_heldin]
    assert (masked == masked[:, :1, :]).all()
    assert abs(masked.float().mean().item() - 0.3) < 0.04


def test_model_never_sees_heldout_or_forward_and_always_scores_them():
    x, loss_mask = run_mask(cfg())
    T, Nh = LAYOUT.trial_bins, LAYOUT.n_heldin
    assert (x[:, :, Nh:] == 0).all() and (x[:, T:, :] == 0).all()
    assert loss_mask[:, :, Nh:].all() and loss_mask[:, T:, :].all()
    assert torch.equal(unmasked_loss_mask(x.shape, LAYOUT, "cpu")[:, :T, :Nh], torch.zeros_like(loss_mask[:, :T, :Nh]))
    plain = model_input(counts(2), LAYOUT)
    assert (plain[:, :T, :Nh] == 3).all() and plain[:, T:].sum() == 0 and plain[:, :, Nh:].sum() == 0


def test_random_counts_stay_in_range():
    x, loss_mask = run_mask(cfg(mask_ratio=1.0, mask_token_ratio=0.0, mask_random_ratio=1.0), max_count=5)
    heldin = x[:, : LAYOUT.trial_bins, : LAYOUT.n_heldin]
    assert heldin.min() >= 0 and heldin.max() <= 5 and heldin.eq(heldin.round()).all()
    assert len(torch.unique(heldin)) == 6  # every count 0..5 turns up


def test_spans_mask_runs_of_bins():
    _, loss_mask = run_mask(cfg(mask_ratio=0.3, mask_max_span=4), span=4, b=256)
    bins = loss_mask[:, : LAYOUT.trial_bins, 0].float()
    frac = bins.mean().item()
    assert 0.2 < frac < 0.3  # starts at ratio/span, stretched over 4 bins (overlaps lower it a little)
    # a masked bin's neighbour is masked far more often than chance
    both = (bins[:, 1:] * bins[:, :-1]).mean().item()
    assert both / frac > 0.6


def test_span_ramp():
    c = cfg(mask_max_span=5, mask_span_ramp_start=100, mask_span_ramp_end=200)
    assert [current_span(c, s) for s in (0, 99, 100, 150, 199, 200, 10_000)] == [1, 1, 1, 3, 4, 5, 5]
    assert current_span(cfg(mask_max_span=3), 0) == 3  # no ramp: full span from the start
    assert current_span(cfg(), 10) == 1


def test_masks_are_reproducible_from_the_generator():
    a = run_mask(cfg(), seed=4)
    b = run_mask(cfg(), seed=4)
    c = run_mask(cfg(), seed=5)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0]) and not torch.equal(a[1], c[1])


def test_loss_is_blind_to_unmasked_heldin_tokens():
    targets = torch.poisson(torch.full(counts(4).shape, 2.0))
    _, loss_mask = mask_batch(targets, LAYOUT, cfg(), 1, 10, torch.Generator().manual_seed(0))
    log_rates = torch.randn(targets.shape, requires_grad=True)
    loss = poisson_loss(log_rates, targets, loss_mask)
    loss.backward()
    hidden = ~loss_mask
    assert hidden.any()
    assert (log_rates.grad[hidden] == 0).all() and (log_rates.grad[loss_mask] != 0).all()
    # any targets or predictions (even inf) outside the mask leave the loss unchanged
    other_targets = targets.clone()
    other_targets[hidden] = 99.0
    other_rates = log_rates.detach().clone()
    other_rates[hidden] = float("inf")
    assert poisson_loss(other_rates, other_targets, loss_mask).item() == pytest.approx(loss.item(), rel=1e-6)
    # and it is the mean Poisson NLL over the masked tokens
    lr = log_rates.detach()[loss_mask]
    expected = (lr.exp() - targets[loss_mask] * lr).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
