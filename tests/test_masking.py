"""Masked modelling: proportions, spans, and a loss that sees only masked held-in tokens plus everything hidden."""

import dataclasses

import pytest
import torch

from nlbpipe.config import TrainConfig
from nlbpipe.ndt.masking import (
    Layout,
    draw_span,
    mask_batch,
    model_input,
    poisson_loss,
    span_probability,
    unmasked_loss_mask,
)

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


def test_span_probability_ramps_over_passes():
    c = cfg(mask_max_span=5, mask_span_ramp_start_passes=100, mask_span_ramp_end_passes=200)
    assert [span_probability(c, p) for p in (0, 99.9, 100, 150, 200, 10_000)] == [0, 0, 0, 0.5, 1, 1]
    assert span_probability(cfg(mask_max_span=3), 0) == 1  # no ramp: spans from the start
    assert span_probability(cfg(), 10) == 0  # mask_max_span 1: never


def test_span_width_drawn_per_batch_from_1_to_max():
    c = cfg(mask_max_span=4)
    gen = torch.Generator().manual_seed(0)
    widths = [draw_span(c, 1.0, gen) for _ in range(4000)]
    assert set(widths) == {1, 2, 3, 4}
    assert all(abs(widths.count(w) / 4000 - 0.25) < 0.03 for w in (1, 2, 3, 4))  # uniform over 1..max
    half = [draw_span(c, 0.5, gen) for _ in range(4000)]
    # half the batches single bins, the other half uniform over 1..4 (a quarter of those also 1)
    assert abs(half.count(1) / 4000 - (0.5 + 0.5 / 4)) < 0.03 and abs(half.count(4) / 4000 - 0.125) < 0.02
    assert all(draw_span(c, 0.0, gen) == 1 for _ in range(100))


def test_full_mode_masks_single_tokens():
    x, loss_mask = run_mask(cfg(mask_mode="full", mask_ratio=0.25))
    T, Nh = LAYOUT.trial_bins, LAYOUT.n_heldin
    masked = loss_mask[:, :T, :Nh].float()
    assert abs(masked.mean().item() - 0.25) < 0.02
    # tokens, not bins or channels: neither the neurons of a bin nor the bins of a neuron agree
    assert not (masked == masked[:, :, :1]).all() and not (masked == masked[:, :1, :]).all()
    # independent per token: two neurons of one bin are both masked about ratio^2 of the time
    assert abs((masked[:, :, 0] * masked[:, :, 1]).mean().item() - 0.25 ** 2) < 0.02
    assert loss_mask[:, T:, :].all() and loss_mask[:, :T, Nh:].all()  # hidden tokens always in the loss


def test_full_mode_spans_run_along_time_per_neuron():
    _, loss_mask = run_mask(cfg(mask_mode="full", mask_ratio=0.3, mask_max_span=4), span=4, b=128)
    m = loss_mask[:, : LAYOUT.trial_bins, : LAYOUT.n_heldin].float()
    frac = m.mean().item()
    assert 0.2 < frac < 0.3
    assert (m[:, 1:] * m[:, :-1]).mean().item() / frac > 0.6  # runs in time
    assert abs((m[:, :, 0] * m[:, :, 1]).mean().item() - frac ** 2) < 0.02  # independent across neurons


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
