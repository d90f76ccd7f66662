"""What an NWB file holds, read cheaply with h5py (units, trials per split, trial fields, behaviour
series), and its unit and trial counts against the registry.

Below both ``tensors`` (which refuses another dataset's files at build time) and ``check``
(``download_data.py --check``), so neither imports the other.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .datasets import DatasetInfo


@dataclass
class FileFacts:
    path: Path
    n_heldin: int
    n_heldout: int
    splits: Counter
    trial_fields: set[str]
    series: set[str] = field(default_factory=set)


def _names(group) -> set[str]:
    """TimeSeries names as ``NWBDataset.load`` gives them (``<container>_<series>`` inside containers)."""
    out = set()
    for name, obj in group.items():
        if not isinstance(obj, h5py.Group):
            continue
        if "data" in obj and isinstance(obj["data"], h5py.Dataset):
            out.add(name)
        else:
            out.update(f"{name}_{sub}" for sub, o in obj.items()
                       if isinstance(o, h5py.Group) and "data" in o)
    return out


def file_facts(path: Path) -> FileFacts:
    """Units, trials per split, trial fields and behaviour series of one NWB file."""
    from .nwbload import file_split_counts

    with h5py.File(path, "r") as f:
        units = f["units"]
        n_units = len(units["id"])
        held = np.asarray(units["heldout"][()], dtype=bool) if "heldout" in units else np.zeros(n_units, bool)
        trials = f["intervals"]["trials"]
        fields = {k for k in trials if k != "id" and not k.endswith("_index")}
        series = set()
        for where in ("processing", "acquisition"):
            if where not in f:
                continue
            if where == "processing":
                for module in f[where].values():
                    series |= _names(module)
            else:
                series |= _names(f[where])
    return FileFacts(Path(path), int((~held).sum()), int(held.sum()), file_split_counts(path),
                     fields | {"end_time"} if "stop_time" in fields else fields, series)


def expected_counts(info: DatasetInfo, train_path: Path) -> tuple[dict[str, int], bool]:
    """``({split: trials}, synthetic)``: the registry's counts, or a stand-in's at its scale."""
    from .synthetic import standin_scale
    from .synthetic_model import standin_counts

    scale = standin_scale(train_path) if train_path.is_file() else None
    if scale is not None:
        n = standin_counts(info, scale)
        return dict(zip(("train", "val", "test"), n)), True
    return {"train": info.n_train, "val": info.n_val, "test": info.n_test}, False


def registry_mismatches(info: DatasetInfo, paths: list[Path], phase: str | None = None) -> list[str]:
    """One line per unit or trial count of these files that differs from the registry."""
    counts, synthetic = expected_counts(info, info.train_path(Path(paths[0]).parents[2]))
    lines = []
    for p in paths:
        facts = file_facts(p)
        is_test = Path(p).name == Path(info.test_file).name
        want_units = (info.n_heldin, 0) if is_test else (info.n_heldin, info.n_heldout)
        for what, got, want in (("units held-in", facts.n_heldin, want_units[0]),
                                ("units held-out", facts.n_heldout, want_units[1])):
            if got != want:
                lines.append(f"{info.name}: {p}: {what} {got}, registry {want}")
        splits = ("test",) if is_test else ("train", "val")
        for split in splits:
            if split in info.unconfirmed and not synthetic:
                continue  # not confirmed from the archive: the file's own table is the reference
            got, want = facts.splits.get(split, 0), counts[split]
            if got != want:
                lines.append(f"{info.name}: {p}: {split} trials {got}, "
                             f"{'stand-in at its scale' if synthetic else 'registry'} {want}")
        # other split values (if a file has them) are listed by check_dataset's report, not refused:
        # nlb_tools never selects them
    return lines
