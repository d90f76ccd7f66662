"""The Neural Data Transformer (Ye & Pandarinath 2021), as used for NLB'21, the architecture only.

Each time bin is one token: the vector of spike counts of all neurons in that bin. The input holds
held-in counts over the trial and forward bins, with held-out neurons and forward bins zero-filled
([B, T+F, N_heldin+N_heldout]); the output is the log rate of every neuron in every bin, so one
model predicts held-out neurons (co-smoothing) and future bins (forward prediction) at once.

Read top to bottom: (input smoothing) -> embedding -> position -> encoder layers -> (factors) -> rate read-out. The CPU kernels
(cheap dropout masks, attention with dropped probabilities) and the choice among attention
implementations are in ``nlbpipe.ndt.kernels``. Two 2021 bugs are not
carried over: learned positions index 0..T-1 (not 1..T into a table of size T), and the loss
labels cover all held-out neurons (see ``nlbpipe.masking``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import NlbpipeError
from .config import ModelConfig
from .kernels import attention, drop, dropout, flash_attn_func, scaled_linear


class ModelError(NlbpipeError, ValueError):
    """A model that cannot be built for this data; names the key at fault."""


def band_mask(length: int, backward: int, forward: int) -> torch.Tensor | None:
    """Boolean [L, L], True where query bin i may attend key bin j: i - backward <= j <= i + forward.

    None means full context, so SDPA can take its unmasked (fastest) kernel.
    """
    if backward < 0 and forward < 0:
        return None
    i = torch.arange(length)[:, None]
    j = torch.arange(length)[None, :]
    allowed = torch.ones(length, length, dtype=torch.bool)
    if backward >= 0:
        allowed &= j >= i - backward
    if forward >= 0:
        allowed &= j <= i + forward
    return allowed


class ScaleNorm(nn.Module):
    """x * g / ||x|| with one learned scale (Nguyen & Salazar 2019); cheaper than LayerNorm, used by NDT."""

    def __init__(self, scale: float, eps: float = 1e-5):
        super().__init__()
        self.g = nn.Parameter(torch.tensor(float(scale)))
        self.eps = eps

    def forward(self, x):
        return x * (self.g / x.norm(dim=-1, keepdim=True).clamp(min=self.eps))


class SelfAttention(nn.Module):
    """Multi-head self-attention over bins, restricted to a band of context.

    The model width is the neuron count, which a head count need not divide; each head then gets
    ceil(width / heads) dimensions (identical to standard attention when it divides), so a search
    over ``num_heads`` never fails on a dataset's neuron count. q, k and v are separate maps so
    their gradients land in separate tensors (a fused qkv's backward concatenates them).
    """

    def __init__(self, width: int, heads: int, dropout: float, backward: int, forward: int):
        super().__init__()
        self.heads = heads
        self.head_dim = math.ceil(width / heads)
        inner = heads * self.head_dim
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, inner) for _ in range(3))
        self.out_proj = nn.Linear(inner, width)
        self.dropout = dropout
        self.window = (backward, forward)
        self.use_flash = flash_attn_func is not None  # toggled by tests to compare both paths

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, out_scale: float = 1.0) -> torch.Tensor:
        """Attention output projected back to the width, times ``out_scale`` (the caller's dropout rescale)."""
        B, L, _ = x.shape
        H, D = self.heads, self.head_dim
        q = scaled_linear(x, self.q_proj, out_scale=D ** -0.5).view(B, L, H, D)  # softmax scale rides on q's weights
        k, v = (proj(x).view(B, L, H, D) for proj in (self.k_proj, self.v_proj))
        p = self.dropout if self.training else 0.0
        y, weight_scale = attention(q, k, v, mask, p, self.window, flash=self.use_flash)
        return scaled_linear(y.reshape(B, L, H * D), self.out_proj, weight_scale, out_scale)


class EncoderLayer(nn.Module):
    """Attention and feed-forward blocks with residuals; norm before (pre-norm) or after each block.

    Each dropout's 1/(1-p) rescale rides on the weights of the linear map that follows it.
    """

    def __init__(self, width: int, cfg: ModelConfig):
        super().__init__()
        self.pre_norm = cfg.pre_norm
        self.attn = SelfAttention(width, cfg.num_heads, cfg.dropout, cfg.context_backward, cfg.context_forward)
        self.linear1 = nn.Linear(width, cfg.hidden_size)
        self.linear2 = nn.Linear(cfg.hidden_size, width)
        self.activation = F.relu if cfg.activation == "relu" else F.gelu
        norm = (lambda: ScaleNorm(width ** 0.5)) if cfg.scale_norm else (lambda: nn.LayerNorm(width))
        self.norm1, self.norm2 = norm(), norm()
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        p, train = self.dropout, self.training
        s = 1.0 / (1.0 - p) if train else 1.0
        h = self.attn(self.norm1(x) if self.pre_norm else x, mask, out_scale=s)
        x = x + drop(h, p, train)
        if not self.pre_norm:
            x = self.norm1(x)
        h = self.norm2(x) if self.pre_norm else x
        h = drop(self.activation(self.linear1(h)), p, train)
        h = scaled_linear(h, self.linear2, weight_scale=s, out_scale=s)
        x = x + drop(h, p, train)
        if not self.pre_norm:
            x = self.norm2(x)
        return x


class InputSmoothing(nn.Module):
    """Held-in counts [B, T+F, N] smoothed along the trial bins with a Gaussian (s.d. ``sd_bins``, cut
    at 3 s.d.), each bin divided by the kernel mass inside the trial so edge bins are not diluted by
    the zero padding. Forward bins and held-out neurons (zeros in the input) stay zero. Masking
    happens before, so a hidden bin's count never reaches its neighbours."""

    def __init__(self, sd_bins: float, trial_bins: int):
        super().__init__()
        radius = max(1, math.ceil(3 * sd_bins))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (t / sd_bins) ** 2)
        kernel = (kernel / kernel.sum()).view(1, 1, -1)
        self.register_buffer("kernel", kernel, persistent=False)
        # the kernel mass inside the trial at each bin: fixed by the shape, so computed once
        mass = F.conv1d(torch.ones(1, 1, trial_bins), kernel, padding=radius)
        self.register_buffer("mass", mass, persistent=False)
        self.radius, self.trial_bins = radius, trial_bins

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        B, L, N = spikes.shape
        T = min(self.trial_bins, L)
        trial = spikes[:, :T].transpose(1, 2).reshape(B * N, 1, T)
        kernel = self.kernel.to(spikes.dtype)
        mass = self.mass if T == self.trial_bins else F.conv1d(torch.ones_like(trial[:1]), kernel, padding=self.radius)
        smoothed = F.conv1d(trial, kernel, padding=self.radius) / mass.to(spikes.dtype)
        smoothed = smoothed.view(B, N, T).transpose(1, 2)
        return torch.cat([smoothed, spikes[:, T:]], dim=1) if L > T else smoothed


def sinusoidal_table(length: int, width: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : width // 2]
    return table


class NDT(nn.Module):
    """Spike counts [B, T+F, N] (held-out neurons and forward bins zero) -> log rates [B, T+F, N].

    The data shape (bins and neurons) is stored in the ``dims`` buffer so a checkpoint's plain
    state_dict plus its config rebuild the model without the data.
    """

    def __init__(self, cfg: ModelConfig, trial_bins: int, forward_bins: int, n_heldin: int, n_heldout: int,
                 bin_ms: float | None = None):
        super().__init__()
        self.cfg = cfg
        self.trial_bins, self.forward_bins = trial_bins, forward_bins
        self.n_heldin, self.n_heldout = n_heldin, n_heldout
        self.register_buffer("dims", torch.tensor([trial_bins, forward_bins, n_heldin, n_heldout]))
        n = n_heldin + n_heldout
        length = trial_bins + forward_bins
        self.input_smoothing = None
        if cfg.input_smooth_ms > 0:
            if cfg.embedding == "count":
                raise ModelError(f"model.input_smooth_ms {cfg.input_smooth_ms} needs counts a linear map can read; "
                                 "model.embedding 'count' looks up whole spike counts (use 'identity' or 'linear')")
            if not bin_ms:
                raise ModelError(f"model.input_smooth_ms {cfg.input_smooth_ms} needs the data's bin size: "
                                 "data.dataset must be an NLB key such as mc_maze_20")
            self.input_smoothing = InputSmoothing(cfg.input_smooth_ms / bin_ms, trial_bins)
        if cfg.embedding == "count":
            width = n * cfg.embed_dim
            self.embedder = nn.Embedding(cfg.max_spike_count + 1, cfg.embed_dim)
        elif cfg.embedding == "linear":
            width = n
            self.embedder = nn.Linear(n, n)
        else:
            width = n
            self.embedder = None
        self.width = width
        self.scale = math.sqrt(width)  # as NDT: embedded counts scaled by sqrt(width) before positions
        if cfg.position == "learned":
            self.position = nn.Parameter(torch.zeros(length, width))
        else:
            self.register_buffer("position", sinusoidal_table(length, width), persistent=False)
        self.layers = nn.ModuleList(EncoderLayer(width, cfg) for _ in range(cfg.num_layers))
        self.final_norm = (ScaleNorm(width ** 0.5) if cfg.scale_norm else nn.LayerNorm(width)) if cfg.pre_norm else None
        # the factors keep torch's default Linear init: neither _init_weights draws them
        self.factors = nn.Linear(width, cfg.factor_dim) if cfg.factor_dim else None
        self.readout = nn.Linear(cfg.factor_dim or width, n)
        mask = band_mask(length, cfg.context_backward, cfg.context_forward)
        self.register_buffer("attn_mask", mask, persistent=False)
        self._init_weights()

    def _init_weights(self):
        if self.cfg.init == "ndt2021":
            return self._init_weights_2021()
        for layer in self.layers:
            attn = layer.attn
            # q, k, v drawn as one fused [3*inner, width] matrix would be, as in nn.MultiheadAttention
            bound = math.sqrt(6.0 / (self.width + 3 * attn.heads * attn.head_dim))
            for lin in (attn.q_proj, attn.k_proj, attn.v_proj):
                nn.init.uniform_(lin.weight, -bound, bound)
            for lin in (attn.out_proj, layer.linear1, layer.linear2):
                nn.init.xavier_uniform_(lin.weight)
            for lin in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj, layer.linear1, layer.linear2):
                nn.init.zeros_(lin.bias)
        nn.init.uniform_(self.readout.weight, -0.1, 0.1)
        nn.init.zeros_(self.readout.bias)
        if isinstance(self.position, nn.Parameter):
            nn.init.normal_(self.position, std=0.02)
        if self.cfg.fixup_init:
            # T-Fixup (Huang et al. 2020), as NDT: shrink the residual branches' weights by 0.67 N^-1/4
            # (values by a further sqrt 2) so training is stable without warm-up-dependent layer norms.
            self._shrink_residual_branches(value_factor=2 ** 0.5)
            with torch.no_grad():
                if self.embedder is not None:
                    nn.init.normal_(self.embedder.weight, std=self.width ** -0.5)
                    self.embedder.weight.mul_((9 * self.cfg.num_layers) ** -0.25)

    def _init_weights_2021(self):
        """The initialisation the 2021 NDT ran (read from its code, not copied): torch's defaults for
        every Linear but the read-out, q/k/v drawn as one fused Xavier matrix with zero bias,
        learned positions N(0, 1), count embedding U(+-0.1); T-Fixup shrinks the feed-forward and
        out-projection weights by 0.67 N^-1/4 and leaves the values alone (its value branch never
        matched a parameter of torch's attention)."""
        for layer in self.layers:
            attn = layer.attn
            bound = math.sqrt(6.0 / (self.width + 3 * attn.heads * attn.head_dim))
            for lin in (attn.q_proj, attn.k_proj, attn.v_proj):
                nn.init.uniform_(lin.weight, -bound, bound)
                nn.init.zeros_(lin.bias)
            for lin in (layer.linear1, layer.linear2):
                lin.reset_parameters()
            attn.out_proj.reset_parameters()
            nn.init.zeros_(attn.out_proj.bias)  # torch's attention zeroes it
        nn.init.uniform_(self.readout.weight, -0.1, 0.1)
        nn.init.zeros_(self.readout.bias)
        if isinstance(self.position, nn.Parameter):
            nn.init.normal_(self.position, std=1.0)
        if self.embedder is not None and self.cfg.embedding == "count":
            nn.init.uniform_(self.embedder.weight, -0.1, 0.1)
        if self.cfg.fixup_init:
            self._shrink_residual_branches(value_factor=None)

    @torch.no_grad()
    def _shrink_residual_branches(self, value_factor: float | None) -> None:
        """T-Fixup's scaling: feed-forward and out-projection weights by 0.67 N^-1/4; the values by a
        further ``value_factor`` (None: left alone, as the 2021 code ran)."""
        s = 0.67 * self.cfg.num_layers ** -0.25
        for layer in self.layers:
            for w in (layer.linear1.weight, layer.linear2.weight, layer.attn.out_proj.weight):
                w.mul_(s)
            if value_factor is not None:
                layer.attn.v_proj.weight.mul_(s * value_factor)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        B, L, _ = spikes.shape
        if self.input_smoothing is not None:
            spikes = self.input_smoothing(spikes)
        if self.cfg.embedding == "count":
            counts = spikes.clamp(0, self.cfg.max_spike_count).long()
            x = self.embedder(counts).reshape(B, L, self.width)
        elif self.embedder is not None:
            x = self.embedder(spikes)
        else:
            x = spikes
        x = x * self.scale + self.position[:L]
        x = dropout(x, self.cfg.dropout_embedding, self.training)
        mask = None if self.attn_mask is None else self.attn_mask[:L, :L]
        for layer in self.layers:
            x = layer(x, mask)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if self.factors is not None:
            x = self.factors(x)
        p = self.cfg.dropout_rates if self.training else 0.0
        out = scaled_linear(drop(x, p, self.training), self.readout, weight_scale=1.0 / (1.0 - p))
        if self.cfg.log_rate:
            return out
        # rate read-out: a softplus keeps rates positive; return its log so one loss serves both
        return torch.log(F.softplus(out) + 1e-8)

    @torch.no_grad()
    def set_mean_rates(self, mean_counts: torch.Tensor) -> None:
        """Start the read-out bias at the log of each neuron's mean count per bin ([N]; the
        inverse softplus for a rate read-out), floored at a thousandth of a spike per bin."""
        mean = mean_counts.to(self.readout.bias).clamp(min=1e-3)
        self.readout.bias.copy_(mean.log() if self.cfg.log_rate else mean.expm1().log())

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_model(cfg: ModelConfig, trial_bins: int, forward_bins: int, n_heldin: int, n_heldout: int,
                bin_ms: float | None = None) -> NDT:
    """The NDT for this data shape; ``bin_ms`` (the data's bin size) is needed only to smooth the input."""
    if min(trial_bins, n_heldin) < 1 or min(forward_bins, n_heldout) < 0:
        raise ModelError(f"cannot build an NDT for {trial_bins}+{forward_bins} bins and "
                         f"{n_heldin}+{n_heldout} neurons")
    return NDT(cfg, trial_bins, forward_bins, n_heldin, n_heldout, bin_ms)
