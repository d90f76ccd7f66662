"""The six rate tensors of an NLB submission, and the `.h5` files that hold them.

Rates are expected spike counts per bin (not per second), float32, with nlb_tools' names.
A checkpoint keeps its predictions as ``rates_val.h5`` / ``rates_test.h5``: the six tensors at
the file's root. A submission holds the same six tensors inside one group per dataset key
(``mc_maze``, ``mc_maze_20``, ...); see ``nlbpipe.submission``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from .errors import MissingKeyError
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
