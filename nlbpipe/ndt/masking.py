"""NDT's masked modelling: which held-in tokens to hide each step, and the loss over what is hidden.

The model never sees held-out neurons or forward bins, so they are always in the loss: that is the
co-smoothing and forward-prediction objective. Held-in tokens enter the loss only where masked;
otherwise the model could copy its input. Masks are drawn on the data's device for the whole batch
at once, from a caller-owned generator, so a run is reproducible and resumable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import TrainConfig


@dataclass(frozen=True)
class Layout:
    """Where held-in/held-out neurons and trial/forward bins sit in a [B, T+F, N] tensor."""

    trial_bins: int
    forward_bins: int
    n_heldin: int
    n_heldout: int


def current_span(cfg: TrainConfig, step: int) -> int:
    """Mask span at ``step``: 1 before the ramp, ``mask_max_span`` after it, linear in between."""
    if cfg.mask_max_span <= 1 or step < cfg.mask_span_ramp_start:
        return 1
    if step >= cfg.mask_span_ramp_end:
        return cfg.mask_max_span
    frac = (step - cfg.mask_span_ramp_start) / (cfg.mask_span_ramp_end - cfg.mask_span_ramp_start)
    return 1 + int(frac * (cfg.mask_max_span - 1))


def model_input(targets: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The unmasked model input: held-in counts over trial bins, zeros for held-out neurons and forward bins."""
    x = torch.zeros_like(targets)
    x[:, : layout.trial_bins, : layout.n_heldin] = torch.nan_to_num(targets[:, : layout.trial_bins, : layout.n_heldin])
    return x


def unmasked_loss_mask(shape, layout: Layout, device, targets: torch.Tensor | None = None) -> torch.Tensor:
    """True on every token the model cannot see: all held-out neurons, and held-in forward bins
    (without the NaN, unrecorded, bins of ``targets`` when given)."""
    keep = torch.ones(shape, dtype=torch.bool, device=device)
    keep[:, : layout.trial_bins, : layout.n_heldin] = False
    return keep if targets is None else keep & ~torch.isnan(targets)


def mask_batch(targets: torch.Tensor, layout: Layout, cfg: TrainConfig, span: int, max_count: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (model input with masked held-in tokens corrupted, boolean loss mask), both [B, T+F, N].

    Of the masked held-in tokens, ``mask_token_ratio`` are zeroed and ``mask_random_ratio`` of the
    rest replaced by a uniform random count in [0, max_count]; the remainder keep their value (BERT's
    80/10/10). One uniform draw per token decides all three and the random count, so masking costs
    two random tensors per batch.
    """
    B, _, _ = targets.shape
    T, Nh = layout.trial_bins, layout.n_heldin
    dev = targets.device
    if cfg.mask_mode == "timestep":
        if span > 1:
            # pick span starts at ratio/span, then stretch each start over `span` bins
            starts = torch.rand(B, 1, T, device=dev, generator=generator) < cfg.mask_ratio / span
            masked_bins = F.max_pool1d(F.pad(starts.float(), (span - 1, 0)), span, stride=1) > 0
            masked_bins = masked_bins.view(B, T)
        else:
            masked_bins = torch.rand(B, T, device=dev, generator=generator) < cfg.mask_ratio
        masked = masked_bins[:, :, None].expand(B, T, Nh)
    else:  # neuron: hide whole held-in channels for the trial
        masked = (torch.rand(B, Nh, device=dev, generator=generator) < cfg.mask_ratio)[:, None, :].expand(B, T, Nh)

    u = torch.rand(B, T, Nh, device=dev, generator=generator)
    zero_end = cfg.mask_token_ratio
    rand_end = zero_end + (1.0 - zero_end) * cfg.mask_random_ratio
    zeroed = masked & (u < zero_end)
    randomized = masked & (u >= zero_end) & (u < rand_end)
    # reuse u within [zero_end, rand_end) as a fresh uniform for the random count
    width = max(rand_end - zero_end, 1e-12)
    random_counts = ((u - zero_end) / width * (max_count + 1)).floor().clamp(0, max_count)

    heldin = torch.nan_to_num(targets[:, :T, :Nh])  # an unrecorded (NaN) count enters as 0, never as NaN
    corrupted = torch.where(zeroed, torch.zeros_like(heldin), torch.where(randomized, random_counts, heldin))
    x = torch.zeros_like(targets)
    x[:, :T, :Nh] = corrupted

    loss_mask = unmasked_loss_mask(targets.shape, layout, dev)
    loss_mask[:, :T, :Nh] = masked
    return x, loss_mask & ~torch.isnan(targets)


def poisson_loss(log_rates: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean Poisson NLL (up to the log k! constant) over the tokens in ``loss_mask``."""
    total, count = poisson_loss_sum(log_rates, targets, loss_mask)
    return total / count.clamp(min=1)


def poisson_loss_sum(log_rates, targets, loss_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL, token count) over ``loss_mask``, for means over many batches."""
    # NaN (unrecorded) targets are outside every loss mask; zeroed here too, or NaN * 0 would reach
    # the gradient through the product below
    nll = torch.exp(log_rates) - torch.nan_to_num(targets) * log_rates
    # where(), not a product: a token outside the mask must not reach the loss even as inf or NaN
    return torch.where(loss_mask, nll, torch.zeros_like(nll)).sum(), loss_mask.sum()
