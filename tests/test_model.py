"""The NDT: shapes for every option, the attention band, T-Fixup, dropout, attention paths agreeing."""

import dataclasses

import pytest
import torch

from nlbpipe.config import ModelConfig
from nlbpipe.ndt.kernels import flash_attn_func, keep_mask
from nlbpipe.ndt.model import NDT, InputSmoothing, ModelError, band_mask, build_model

T, F_, NH, NO = 12, 4, 7, 3


def make(bin_ms=20, **kw) -> NDT:
    torch.manual_seed(0)
    return build_model(dataclasses.replace(ModelConfig(), **kw), T, F_, NH, NO, bin_ms)


def spikes(b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.poisson(torch.full((b, T + F_, NH + NO), 1.5), generator=g)
    x[:, T:] = 0
    x[:, :, NH:] = 0
    return x


OPTIONS = [
    {},
    {"embedding": "linear"},
    {"embedding": "count", "embed_dim": 3, "max_spike_count": 4},
    {"position": "sinusoidal"},
    {"pre_norm": False, "fixup_init": False},
    {"scale_norm": True},
    {"log_rate": False},
    {"activation": "gelu", "hidden_size": 5},
    {"context_forward": 2, "context_backward": 3},
    {"context_forward": 0, "context_backward": -1},
    {"num_heads": 3, "num_layers": 1},  # 3 heads do not divide the 10 neurons
    {"dropout": 0.0, "dropout_rates": 0.0, "dropout_embedding": 0.0},
    {"factor_dim": 3},
    {"input_smooth_ms": 30.0},
    {"input_smooth_ms": 15.0, "embedding": "linear"},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_output_shape_and_gradients_for_every_option(options):
    model = make(**options)
    x = spikes()
    for training in (True, False):
        model.train(training)
        out = model(x)
        assert out.shape == (3, T + F_, NH + NO)
        assert torch.isfinite(out).all()
    model.train()
    model(x).exp().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    width = (NH + NO) * (options.get("embed_dim", 1) if options.get("embedding") == "count" else 1)
    assert model.width == width


def test_factors_bound_the_rank_of_the_log_rates():
    """With ``factor_dim`` k every bin's log rates (less the read-out bias) lie in a k-dimensional
    subspace of the neurons; without factors they span all but one (the final norm's). The default adds no parameters,
    so checkpoints written before factors existed still load."""
    def rank(model):
        model.eval()
        with torch.no_grad():
            out = model(spikes(b=4)).reshape(-1, NH + NO) - model.readout.bias
        return torch.linalg.matrix_rank(out.double(), rtol=1e-6).item()

    with_factors = make(factor_dim=3)
    assert with_factors.readout.in_features == 3 and rank(with_factors) == 3
    plain = make()
    assert plain.factors is None and rank(plain) > 3  # 9 of 10: the final LayerNorm removes one direction
    assert not any(k.startswith("factors.") for k in plain.state_dict())


def test_input_smoothing_spreads_a_spike_over_its_neighbours_within_the_trial():
    """A Gaussian over the trial bins whose weights sum to one at every bin, edges included (so a
    constant rate stays constant); forward bins and held-out neurons, zero in the input, stay zero."""
    trial, forward = 30, 5
    smooth = InputSmoothing(sd_bins=1.5, trial_bins=trial)
    x = torch.zeros(1, trial + forward, NH + NO)
    x[0, 15, 0] = 1.0
    x[0, :trial, 1] = 2.0
    y = smooth(x)
    spread = y[0, :trial, 0]
    assert spread.argmax().item() == 15 and 0 < spread[15].item() < 1
    assert torch.allclose(spread[14], spread[16]) and spread[13] < spread[14]  # symmetric, falling off
    assert spread.sum().item() == pytest.approx(1.0, abs=1e-6)  # away from the edges nothing is lost
    assert torch.allclose(y[0, :trial, 1], torch.full((trial,), 2.0))  # edge bins are not diluted by padding
    assert (y[:, trial:] == 0).all() and (y[:, :, NH:] == 0).all()
    assert torch.equal(y[0, :, 2:], x[0, :, 2:])  # silent neurons stay silent
    short = smooth(x[:, :20])  # a shorter input: its own edge, not the trial's
    assert torch.allclose(short[0, :, 1], torch.full((20,), 2.0))


def test_input_smoothing_in_the_model_is_ms_over_bin_size_and_keeps_checkpoints_loadable():
    """The s.d. is in ms, converted with the data's bin size; without smoothing the model has no such
    step, and smoothing adds no parameter or saved buffer (a checkpoint's state_dict is unchanged)."""
    model = make(input_smooth_ms=30.0, bin_ms=20)
    assert model.input_smoothing.radius == 5  # 1.5 bins, cut at 3 s.d.
    assert make(input_smooth_ms=30.0, bin_ms=5).input_smoothing.radius == 18  # 6 bins
    assert make().input_smoothing is None
    assert set(model.state_dict()) == set(make().state_dict())
    # with attention to its own bin only, a spike reaches the trial bins within the kernel's radius
    # (5 bins) and no forward bin
    model = make(input_smooth_ms=30.0, num_layers=1, context_backward=0, context_forward=0)
    assert _influence(model, 6) == set(range(1, 12))


def test_input_smoothing_refuses_what_it_cannot_smooth():
    with pytest.raises(ModelError, match="model.embedding 'count'"):
        make(input_smooth_ms=20.0, embedding="count")
    with pytest.raises(ModelError, match="bin size.*data.dataset"):
        make(input_smooth_ms=20.0, bin_ms=None)


def _influence(model, source_bin):
    """Which output bins change when one input bin changes (eval mode, so no dropout)."""
    model.eval()
    x = spikes(1)
    y = x.clone()
    y[0, source_bin, :NH] += 3.0
    with torch.no_grad():
        diff = (model(x) - model(y)).abs().amax(dim=-1)[0]
    return set(torch.nonzero(diff > 1e-6).flatten().tolist())


@pytest.mark.parametrize("backward, forward", [(2, 1), (0, 0), (3, -1), (-1, 2)])
def test_attention_band_one_layer(backward, forward):
    model = make(num_layers=1, context_backward=backward, context_forward=forward)
    j = 6
    changed = _influence(model, j)
    # output bin i sees input j only if i - backward <= j <= i + forward
    expected = {i for i in range(T + F_) if (backward < 0 or j >= i - backward) and (forward < 0 or j <= i + forward)}
    assert changed == expected


def test_attention_band_grows_with_depth_but_no_further():
    model = make(num_layers=2, context_backward=1, context_forward=1)
    assert _influence(model, 6) == {4, 5, 6, 7, 8}


def test_band_mask_buffer_is_not_in_the_state_dict():
    model = make(context_backward=2, context_forward=2)
    assert model.attn_mask.shape == (T + F_, T + F_)
    assert torch.equal(model.attn_mask, band_mask(T + F_, 2, 2))
    assert "attn_mask" not in model.state_dict() and "dims" in model.state_dict()
    assert make().attn_mask is None  # full context: SDPA's unmasked kernel


def test_learned_positions_cover_bins_from_zero():
    model = make(position="learned")
    assert model.position.shape == (T + F_, model.width)
    model(spikes()).sum().backward()
    assert model.position.grad[0].abs().sum() > 0 and model.position.grad[-1].abs().sum() > 0


def test_fixup_shrinks_residual_branch_weights():
    plain, fixup = make(fixup_init=False), make(fixup_init=True)
    s = 0.67 * 4 ** -0.25
    for a, b in zip(plain.layers, fixup.layers):
        torch.testing.assert_close(b.linear1.weight, a.linear1.weight * s)
        torch.testing.assert_close(b.attn.out_proj.weight, a.attn.out_proj.weight * s)
        torch.testing.assert_close(b.attn.v_proj.weight, a.attn.v_proj.weight * s * 2 ** 0.5)
        torch.testing.assert_close(b.attn.q_proj.weight, a.attn.q_proj.weight)


def test_keep_mask_rate_and_reproducibility():
    torch.manual_seed(3)
    m = keep_mask((400, 500), 0.3, "cpu")
    assert m.dtype == torch.bool and abs(m.float().mean().item() - 0.7) < 0.005
    torch.manual_seed(3)
    assert torch.equal(m, keep_mask((400, 500), 0.3, "cpu"))
    assert keep_mask((1000,), 0.0, "cpu").all()


def test_dropout_is_active_in_training_and_seeded():
    model = make(dropout=0.3, dropout_rates=0.3, dropout_embedding=0.3).train()
    x = spikes()
    torch.manual_seed(5)
    a = model(x)
    torch.manual_seed(5)
    b = model(x)
    c = model(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    model.eval()
    assert torch.equal(model(x), model(x))


def test_cpu_attention_path_matches_sdpa():
    """Training on CPU spells attention out (cheap dropout); with nothing dropped it equals SDPA."""
    model = make(dropout=1e-9, dropout_rates=0.0, dropout_embedding=0.0, context_backward=3, context_forward=2)
    x = spikes()
    model.train()  # attention takes the explicit path (p > 0); p = 1e-9 keeps every element
    explicit = model(x)
    model.eval()  # SDPA path
    torch.testing.assert_close(explicit, model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(flash_attn_func is None or not torch.cuda.is_available(), reason="needs flash-attn and a CUDA GPU")
def test_flash_attention_matches_sdpa():
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(ModelConfig(), num_heads=2, context_backward=5, context_forward=3),
                        T, F_, 24, 8).cuda().eval()  # head dim 16: flash-compatible
    x = torch.poisson(torch.full((4, T + F_, 32), 1.0)).cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for layer in model.layers:
            layer.attn.use_flash = True
        flash = model(x).float()
        for layer in model.layers:
            layer.attn.use_flash = False
        sdpa = model(x).float()
    torch.testing.assert_close(flash, sdpa, rtol=3e-2, atol=3e-2)


def test_dropped_attention_gradients():
    """The memory-saving attention (probabilities recomputed in backward) has autograd-exact gradients."""
    from nlbpipe.ndt.kernels import _DroppedAttention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 3, dtype=torch.double, generator=g, requires_grad=True) for _ in range(3))
    keep = torch.rand(2, 2, 6, 6, generator=g) > 0.3
    bias = torch.zeros(6, 6, dtype=torch.double).masked_fill_(~band_mask(6, 2, 1), float("-inf"))
    assert torch.autograd.gradcheck(lambda a, b, c: _DroppedAttention.apply(a, b, c, keep, bias), (q, k, v))
    reference = (torch.softmax(q @ k.transpose(-1, -2) + bias, -1) * keep) @ v
    torch.testing.assert_close(_DroppedAttention.apply(q, k, v, keep, bias), reference)


def test_ndt2021_init_is_what_the_2021_code_ran():
    torch.manual_seed(0)
    ours, old = make(), make(init="ndt2021")
    assert 0.9 < old.position.std().item() < 1.1 and ours.position.std().item() < 0.05
    s = 0.67 * old.cfg.num_layers ** -0.25
    for a, b in zip(ours.layers, old.layers):
        assert b.linear1.bias.abs().max() > 0 and a.linear1.bias.abs().max() == 0  # torch's default bias
        # torch's default weight bound 1/sqrt(fan_in), then T-Fixup's s; Xavier's is wider
        assert b.linear1.weight.abs().max() <= s / b.linear1.in_features ** 0.5 + 1e-6
        # values unscaled: q and v drawn from the same bound
        assert abs(b.attn.v_proj.weight.abs().max() - b.attn.q_proj.weight.abs().max()) < 0.01
        assert a.attn.v_proj.weight.abs().max() < 0.7 * a.attn.q_proj.weight.abs().max()
        assert b.attn.out_proj.bias.abs().max() == 0
    count = make(init="ndt2021", embedding="count", embed_dim=2)
    assert count.embedder.weight.abs().max() <= 0.1
