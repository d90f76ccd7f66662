"""Re-deriving a published ensemble: AE Studio's winning NLB'21 entry (AESMTE3).

The 2021 winners published every checkpoint of their Bayesian searches (Zenodo record 5875246,
``ae-nlb-2021-model-checkpoints.zip``, fetched by ``download_checkpoints.py`` of
agencyenterprise/ae-nlb-2021). Their ``validate_test_submission.py`` reads this layout::

    <root>/<dataset>/models.csv                   one row per checkpoint; index column first, then
                                                  ``trial_id`` (Ray Tune trial), ``val_ckpt`` and
                                                  ``co-bps`` (validation co-bps) among others
    <root>/<dataset>/<trial_id>.<val_ckpt>.pth    the checkpoint; ``val_ckpt`` is ``lve`` (best
                                                  masked val loss) or ``lfve`` (best unmasked)

and rebuilds the entry as: sort ``models.csv`` by ``co-bps`` descending, take the top N
(``AESMTE3_ENSEMBLE_SIZES``; for dmfc_rsg trial ``a6c8e99c`` is swapped for ``91fde75c``, as
submitted), run each checkpoint on the test-phase data, average the six rate tensors, and compare
with the EvalAI file at ``rtol=1e-5``.

What can be done here without their code, and what cannot:

* Ranking and membership: fully. :func:`published_members` reproduces their selection from
  ``models.csv`` and checks every member's ``.pth`` is present.
* Rates from the weights: not without their code. Each ``.pth`` is ``torch.save`` of a dict whose
  ``config`` is a pickled ``yacs`` ``CfgNode`` and whose ``state_dict`` belongs to their NDT fork
  (``src/model.py``, their data layout and spike clipping). ``torch.load(weights_only=True)``, the
  only way this project loads weights, refuses the pickle (:func:`inspect_checkpoint` reports its
  reason); loading it unrestricted would execute code from the archive, and the state dict would
  still need their model class. nlbpipe's NDT is its own implementation, so its weights do not map.
* Rates from per-model predictions: yes. If each member's test rates were produced with their code
  (their ``src.inference.get_output_rates``) and saved beside the checkpoint as
  ``<trial_id>.<val_ckpt>.rates_test.h5`` (``nlbpipe.rates.save_rates`` format: the six tensors at
  the root), :func:`rederive_published` averages them exactly as they did (equal weights), and
  ``validate_submission.py DATASET FILE --published ROOT`` compares the result with the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import NlbpipeError

AESMTE3_ENSEMBLE_SIZES = {
    "area2_bump": 21,
    "dmfc_rsg": 13,
    "mc_maze": 8,
    "mc_maze_large": 8,
    "mc_maze_medium": 8,
    "mc_maze_small": 7,
    "mc_rtt": 13,
}
# The dmfc_rsg entry as submitted used trial 91fde75c in place of a6c8e99c (their validation script).
SUBMITTED_SWAPS = {"dmfc_rsg": {"a6c8e99c": "91fde75c"}}
MODELS_CSV = "models.csv"
RATES_SUFFIX = ".rates_test.h5"


class PublishedFormatError(NlbpipeError, ValueError):
    """A published checkpoint folder that does not have (or cannot be used through) the expected layout."""


@dataclass
class PublishedMember:
    rank: int
    trial_id: str
    val_ckpt: str
    val_co_bps: float
    checkpoint: Path  # <trial_id>.<val_ckpt>.pth
    rates_test: Path  # <trial_id>.<val_ckpt>.rates_test.h5 (produced with their code, if at all)

    @property
    def label(self) -> str:
        return f"{self.trial_id}.{self.val_ckpt}"


def dataset_folder(root: str | os.PathLike, dataset: str) -> Path:
    """``<root>/<dataset>`` or ``root`` itself when it already is a dataset folder (holds models.csv)."""
    root = Path(root)
    if (root / dataset / MODELS_CSV).is_file():
        return root / dataset
    if (root / MODELS_CSV).is_file():
        return root
    raise PublishedFormatError(f"{root}: no {MODELS_CSV} in {root / dataset} or {root} (AE Studio's Zenodo 5875246 layout)")


def load_models_csv(folder: Path) -> pd.DataFrame:
    path = folder / MODELS_CSV
    try:
        table = pd.read_csv(path, index_col=0, dtype={"trial_id": str, "val_ckpt": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise PublishedFormatError(f"{path} is not a readable csv: {err}") from err
    missing = [c for c in ("trial_id", "val_ckpt", "co-bps") if c not in table.columns]
    if missing:
        raise PublishedFormatError(f"{path} lacks column(s) {', '.join(missing)}; found {', '.join(map(str, table.columns))}")
    table["co-bps"] = pd.to_numeric(table["co-bps"], errors="coerce")
    return table.sort_values("co-bps", ascending=False, kind="stable")


def published_members(root: str | os.PathLike, dataset: str, size: int | None = None) -> list[PublishedMember]:
    """Their ensemble: the top ``size`` rows of models.csv by co-bps (default: AESMTE3's N)."""
    folder = dataset_folder(root, dataset)
    if size is None:
        if dataset not in AESMTE3_ENSEMBLE_SIZES:
            raise PublishedFormatError(f"no published AESMTE3 ensemble size for {dataset!r}; pass --size N")
        size = AESMTE3_ENSEMBLE_SIZES[dataset]
    table = load_models_csv(folder)
    if not 1 <= size <= len(table):
        raise PublishedFormatError(f"--size {size}: {folder / MODELS_CSV} lists {len(table)} checkpoint(s)")
    top = table.head(size).copy()
    for old, new in SUBMITTED_SWAPS.get(dataset, {}).items():
        top.loc[top.trial_id == old, "trial_id"] = new
    members = []
    for rank, (trial_id, val_ckpt, co_bps) in enumerate(zip(top["trial_id"], top["val_ckpt"], top["co-bps"]), start=1):
        stem = f"{trial_id}.{val_ckpt}"
        members.append(PublishedMember(rank, str(trial_id), str(val_ckpt), float(co_bps),
                                       folder / f"{stem}.pth", folder / f"{stem}{RATES_SUFFIX}"))
    absent = [m.checkpoint.name for m in members if not m.checkpoint.is_file()]
    if absent:
        raise PublishedFormatError(f"{folder}: ensemble member checkpoint(s) missing: {', '.join(absent)}")
    return members


def inspect_checkpoint(path: str | os.PathLike) -> str:
    """Why (or whether) a published ``.pth`` loads under ``torch.load(weights_only=True)``."""
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as err:
        first = str(err).strip().splitlines()
        reason = next((line for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else repr(err))
        return f"refused by weights_only=True: {reason.strip()}"
    keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
    return f"loads under weights_only=True (top-level keys: {keys}); the state_dict still needs their NDT class"


def rederive_published(members: list[PublishedMember]) -> dict:
    """Equal-weight mean of the members' saved test rates; explains what is missing otherwise."""
    from .rates import weighted_mean_rates

    absent = [m for m in members if not m.rates_test.is_file()]
    if absent:
        why = inspect_checkpoint(absent[0].checkpoint)
        raise PublishedFormatError(
            f"{len(absent)} of {len(members)} member(s) have no per-model test rates "
            f"(first: {absent[0].rates_test.name}). Their weights cannot be run here: {absent[0].checkpoint.name} {why}. "
            f"Run each member with agencyenterprise/ae-nlb-2021's src.inference.get_output_rates and save its six "
            f"tensors as <trial_id>.<val_ckpt>{RATES_SUFFIX} (nlbpipe.rates.save_rates), then rerun."
        )
    n = len(members)
    return weighted_mean_rates([m.rates_test for m in members], [1.0 / n] * n)
