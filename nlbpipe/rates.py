"""The six rate tensors of an NLB submission, and the `.h5` files that hold them.

Rates are expected spike counts per bin (not per second), float32, with nlb_tools' names.
A checkpoint keeps its predictions as ``rates_val.h5`` / ``rates_test.h5``: the six tensors at
the file's root. A submission holds the same six tensors inside one group per dataset key
(``mc_maze``, ``mc_maze_20``, ...); see ``nlbpipe.submission``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np

from .errors import EnsembleError, MissingKeyError
from .fileio import atomic_path

RATE_KEYS = (
    "train_rates_heldin",
    "train_rates_heldout",
    "eval_rates_heldin",
    "eval_rates_heldout",
    "eval_rates_heldin_forward",
    "eval_rates_heldout_forward",
)

Rates = dict  # dict[str, np.ndarray] keyed by RATE_KEYS


def save_rates(path: str | os.PathLike, rates: Rates, group: str | None = None, **attrs) -> Path:
    """Write the six tensors (float32) to ``path`` atomically, at the root or inside ``group``
    (a submission's dataset key); ``attrs`` go on the file root."""
    missing = [k for k in RATE_KEYS if k not in rates]
    if missing:
        raise MissingKeyError(f"rates for {path} lack {', '.join(missing)}")
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            node = f.create_group(group) if group else f
            for key in RATE_KEYS:
                node.create_dataset(key, data=np.asarray(rates[key], dtype=np.float32))
            for name, value in attrs.items():
                f.attrs[name] = value
    return path


def load_rates(path: str | os.PathLike) -> Rates:
    """Read the six tensors written by :func:`save_rates`; a missing file or key names itself."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"rates file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in RATE_KEYS if k not in f]
            if missing:
                raise MissingKeyError(f"{path} lacks {', '.join(missing)}")
            return {k: f[k][()] for k in RATE_KEYS}
    except OSError as err:
        raise OSError(f"{path} is not a readable HDF5 rates file: {err}") from err



def read_rate_tensor(path: Path, key: str) -> np.ndarray:
    """One tensor of a rates file (an ensemble reads its members one tensor at a time)."""
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise EnsembleError(f"{path} lacks {key}")
            return f[key][()]
    except OSError as err:
        raise EnsembleError(f"{path} is not a readable HDF5 rates file: {err}") from err


# -------------------------------------------------------------------------- rates of an ensemble


def weighted_mean_rates(
    sources: Sequence, weights: Sequence[float], read: Callable[[object, str], np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Σ w_k rates_k per tensor (w_k·rates_k in float32, summed in float64 in member order), as float32.

    ``sources`` are rates files (read one tensor at a time, so memory holds one member's tensor
    plus the sum) or in-memory rate dicts.
    """
    if len(sources) != len(weights) or not sources:
        raise EnsembleError(f"{len(sources)} member(s) but {len(weights)} weight(s)")
    read = read or _read_source
    out = {}
    for key in RATE_KEYS:
        acc = None
        for src, w in zip(sources, weights):
            x = read(src, key)
            if isinstance(src, dict) or not (isinstance(x, np.ndarray) and x.dtype == np.float32):
                x = np.array(x, dtype=np.float32)  # never scale the caller's arrays in place
            if acc is None:
                acc = np.zeros(x.shape, np.float64)
            elif x.shape != acc.shape:
                raise EnsembleError(f"{_name(src)}: {key} has shape {x.shape}, other members {acc.shape}")
            x *= np.float32(w)
            acc += x
        out[key] = acc.astype(np.float32)
    return out


def _read_source(src, key: str) -> np.ndarray:
    if isinstance(src, dict):
        if key not in src:
            raise EnsembleError(f"member rates lack {key}")
        return src[key]
    return read_rate_tensor(Path(src), key)


def _name(src) -> str:
    return str(src) if not isinstance(src, dict) else "member rates"
