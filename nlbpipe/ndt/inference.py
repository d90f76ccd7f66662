"""Checkpoint -> the six rate tensors, for the val and test phases.

Ranking and ensembling read the rates each checkpoint wrote once (``rates_val.h5``/``rates_test.h5``)
and never run a model, so this is the only place a trained NDT meets new data. A checkpoint is a
plain state_dict plus its config; the state_dict's ``dims`` buffer carries the data shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..contracts import RATES_TEST, RATES_VAL
from ..rates import RATE_KEYS, save_rates
from .checkpoints import InferenceError, load_checkpoint
from .model import NDT


@torch.no_grad()
def _predict(model: NDT, heldin: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Rates [trials, T+F, N] from held-in counts [trials, T, N_heldin]."""
    T, F, Nh, No = model.trial_bins, model.forward_bins, model.n_heldin, model.n_heldout
    out = np.empty((heldin.shape[0], T + F, Nh + No), dtype=np.float32)
    for start in range(0, heldin.shape[0], batch_size):
        # nlb_tools builds eval inputs with allow_nans=True: an unrecorded (NaN) count enters as 0,
        # as in training, so no NaN spreads into a trial's rates
        chunk = torch.as_tensor(np.nan_to_num(np.asarray(heldin[start: start + batch_size], dtype=np.float32)),
                                device=device)
        x = torch.zeros(chunk.shape[0], T + F, Nh + No, device=device)
        x[:, :T, :Nh] = chunk
        out[start: start + chunk.shape[0]] = torch.exp(model(x).float()).cpu().numpy()
    return out


def predict_rates(model: NDT, tensors: dict, batch_size: int = 256, device=None) -> dict:
    """The six RATE_KEYS (expected counts per bin, float32) from ``train_spikes_heldin``/``eval_spikes_heldin``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.to(device).eval()
    T, Nh = model.trial_bins, model.n_heldin
    rates = {}
    try:
        for prefix in ("train", "eval"):
            key = f"{prefix}_spikes_heldin"
            if key not in tensors:
                raise InferenceError(f"tensors lack {key!r} (have {', '.join(sorted(tensors))})")
            heldin = tensors[key]
            if heldin.ndim != 3 or heldin.shape[1:] != (T, Nh):
                raise InferenceError(f"{key} has shape {tuple(heldin.shape)}; the model expects "
                                     f"[trials, {T}, {Nh}]")
            full = _predict(model, heldin, batch_size, device)
            rates[f"{prefix}_rates_heldin"] = full[:, :T, :Nh]
            rates[f"{prefix}_rates_heldout"] = full[:, :T, Nh:]
            if prefix == "eval":
                rates["eval_rates_heldin_forward"] = full[:, T:, :Nh]
                rates["eval_rates_heldout_forward"] = full[:, T:, Nh:]
    finally:
        model.train(was_training)
    return {k: np.ascontiguousarray(rates[k]) for k in RATE_KEYS}


def write_checkpoint_rates(ckpt_dir, val_tensors: dict, test_tensors: dict | None) -> None:
    """rates_val.h5 (train trials / val trials) and, given test tensors, rates_test.h5 (train+val / test)."""
    ckpt_dir = Path(ckpt_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, _ = load_checkpoint(ckpt_dir, device)
    save_rates(ckpt_dir / RATES_VAL, predict_rates(model, val_tensors), phase="val")
    if test_tensors is not None:
        save_rates(ckpt_dir / RATES_TEST, predict_rates(model, test_tensors), phase="test")
