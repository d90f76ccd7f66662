"""The NDT's compute kernels: a cheap dropout mask, linear maps that carry a dropout's rescale, and
self-attention behind one function (:func:`attention`) that picks flash-attn, a CPU kernel with
dropped probabilities, or PyTorch's SDPA.

None of this changes what the model computes; it changes how fast (CPU training) or with which
library (GPU). ``nlbpipe.ndt.model`` is the architecture that calls these.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # optional GPU kernel with a native sliding window; SDPA is the reference path
    from flash_attn import flash_attn_func
except Exception:  # pragma: no cover - absent on CPU machines
    flash_attn_func = None


def keep_mask(shape, p: float, device) -> torch.Tensor:
    """Dropout's keep mask (True = keep, probability 1 - p) from 16 random bits per element.

    Why not ``F.dropout``: on CPU its ``bernoulli_`` draws one double per element and was about a
    third of NDT's training time. One int64 ``random_`` yields four 16-bit uniforms, so the same mask
    costs a quarter of the draws; p resolves to 1/65536.
    """
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2 ** 63), 2 ** 63 - 1)
    return words.view(torch.int16)[:n].view(shape) >= round(p * 65536) - 32768


def drop(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero dropped elements WITHOUT the 1/(1-p) rescale: callers fold it into the next linear map."""
    if not training or p == 0.0:
        return x
    return x * keep_mask(x.shape, p, x.device)  # a bool multiply: far faster on CPU than where/masked_fill


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Standard (inverted) dropout through :func:`keep_mask`, for where no linear map follows."""
    if not training or p == 0.0:
        return x
    return drop(x, p, training) * (1.0 / (1.0 - p))


def scaled_linear(x: torch.Tensor, layer: nn.Linear, weight_scale: float = 1.0, out_scale: float = 1.0):
    """``out_scale * layer(weight_scale * x)`` with the scales applied to the (small) weights, not to x."""
    w, b = layer.weight, layer.bias
    if weight_scale * out_scale != 1.0:
        w = w * (weight_scale * out_scale)
    if out_scale != 1.0:
        b = b * out_scale
    return F.linear(x, w, b)


class _DroppedAttention(torch.autograd.Function):
    """``(softmax(q k^T + bias) * keep) @ v`` that saves only q, k, v and the bool keep mask.

    The [B, H, L, L] probabilities were the largest tensors autograd kept (three copies per layer);
    backward recomputes them from q and k instead, for one extra matmul and softmax per layer.
    """

    @staticmethod
    def forward(ctx, q, k, v, keep, bias):
        probs = _DroppedAttention._probs(q, k, bias)
        ctx.save_for_backward(q, k, v, keep, bias)
        return torch.matmul(probs.mul_(keep).to(v.dtype), v)

    @staticmethod
    def _probs(q, k, bias):
        scores = torch.matmul(q, k.transpose(-1, -2))
        if scores.dtype in (torch.float16, torch.bfloat16):  # softmax in float32 under autocast
            scores = scores.float()
        if bias is not None:
            scores += bias
        return torch.softmax(scores, dim=-1)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, keep, bias = ctx.saved_tensors
        probs = _DroppedAttention._probs(q, k, bias)
        grad_v = torch.matmul((probs * keep).to(v.dtype).transpose(-1, -2), grad_out)
        grad_probs = torch.matmul(grad_out, v.transpose(-1, -2)).to(probs.dtype).mul_(keep)
        grad_scores = probs.mul_(grad_probs - (grad_probs * probs).sum(-1, keepdim=True)).to(q.dtype)
        return torch.matmul(grad_scores, k), torch.matmul(grad_scores.transpose(-1, -2), q), grad_v, None, None


def flash_ok(q: torch.Tensor) -> bool:
    """flash-attn takes half-precision CUDA tensors [B, L, H, D] with D a multiple of 8, at most 256."""
    D = q.shape[-1]
    return (flash_attn_func is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
            and D % 8 == 0 and D <= 256)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, p: float,
              window: tuple[int, int], flash: bool = True) -> tuple[torch.Tensor, float]:
    """Scaled (q already carries 1/sqrt(D)) attention of [B, L, H, D] tensors with dropout ``p``.

    ``mask`` ([L, L] bool, True = may attend) and ``window`` (bins back, ahead; -1 = all) say the same
    band for the SDPA and flash-attn paths. Returns ``(y [B, L, H, D], weight_scale)``: the CPU
    dropout path leaves the 1/(1-p) rescale to the caller's next linear map (``weight_scale``).
    """
    B, L, H, _ = q.shape
    if flash and flash_ok(q):
        return flash_attn_func(q, k, v, dropout_p=p, softmax_scale=1.0, window_size=window), 1.0
    if p > 0.0 and not q.is_cuda:
        # CPU training: SDPA's dropout falls back to its slowest kernel; spell attention out and
        # drop probabilities with the cheap mask, the 1/(1-p) going into out_proj's weights
        q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))
        bias = None if mask is None else torch.zeros(mask.shape, device=q.device).masked_fill_(~mask, float("-inf"))
        keep = keep_mask((B, H, L, L), p, q.device)
        return _DroppedAttention.apply(q, k, v, keep, bias).transpose(1, 2), 1.0 / (1.0 - p)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, L, D]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=1.0).transpose(1, 2), 1.0
