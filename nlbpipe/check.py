"""A dataset's NWB files held to the registry and to what nlb_tools needs (``download_data.py --check``).

For each dataset: the files found, units held-in / held-out, trials per split, the trial fields and
behaviour series nlb_tools' ``make_tensors.PARAMS`` reads, and the shapes of the tensors then built,
compared with ``nlbpipe.datasets``. Each mismatch is one line naming the file and what differs.
Files read cheaply with h5py (no session frame); only the tensor shapes need a build (cached).

A synthetic stand-in written at ``--scale`` below 1 is held to its scaled trial counts
(``synthetic.standin_counts``), real files to the registry's; units are the registry's either way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .datasets import BIN_SIZES, DATASETS, DatasetInfo, dataset_key


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
    from .synthetic import standin_counts, standin_scale

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


class _FieldRecorder:
    """Stands in for a trials frame to learn which fields a PARAMS lambda reads."""

    def __init__(self, n=2):
        import pandas as pd

        self._n, self._pd, self.used = n, pd, set()

    def __len__(self):
        return self._n

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        self.used.add(name)
        return self._pd.Series(np.zeros(self._n))

    def __getitem__(self, name):
        return self.__getattr__(name)

    def get(self, name, default=None):
        return default  # an optional field (``x.get('tp', ...)``)


def _walk_fields(obj, out: set):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k.endswith("_field") and isinstance(v, str) and k not in ("spk_field", "hospk_field",
                                                                         "rate_field", "horate_field",
                                                                         "behavior_field"):
                out.add(v)
            elif k == "cond_fields":
                out.update(v)
            elif callable(v):
                rec = _FieldRecorder()
                try:
                    v(rec)
                except Exception:  # noqa: BLE001 - only the names it touched matter
                    pass
                out |= rec.used
            else:
                _walk_fields(v, out)


def needed_fields(name: str) -> tuple[set[str], set[str], set[str]]:
    """``(train-file trial fields, test-file trial fields, behaviour series)`` nlb_tools reads."""
    from nlb_tools.make_tensors import PARAMS

    p = PARAMS[name]
    train = {"start_time", "end_time", "split"}
    _walk_fields(p, train)
    series = set()
    if p.get("behavior_source") == "trial_info":
        train |= set(p["behavior_field"])
    else:
        series.add(p["behavior_field"])
    test = {"start_time", "end_time", "split"}
    _walk_fields(p["make_params"], test)
    return train, test, series


def field_mismatches(info: DatasetInfo, paths: list[Path]) -> list[str]:
    train_fields, test_fields, series = needed_fields(info.name)
    lines = []
    for p in paths:
        facts = file_facts(p)
        is_test = Path(p).name == Path(info.test_file).name
        for f in sorted((test_fields if is_test else train_fields) - facts.trial_fields):
            lines.append(f"{info.name}: {p}: trials table lacks field {f!r} (nlb_tools' PARAMS reads it)")
        if not is_test:
            for s in sorted(series - facts.series):
                lines.append(f"{info.name}: {p}: no behaviour series {s!r} (nlb_tools' PARAMS decodes it)")
    return lines


def expected_tensor_shapes(info: DatasetInfo, bin_ms: int, phase: str, counts: dict) -> dict:
    """``{key: (trials, bins, neurons)}`` from the counts and PARAMS' windows."""
    from nlb_tools.make_tensors import PARAMS

    p = PARAMS[info.name]
    lo, hi = p["make_params"]["align_range"]
    T, F = int(round((hi - lo) / bin_ms)), int(round(p["fp_len"] / bin_ms))
    n_tr = counts["train"] if phase == "val" else counts["train"] + counts["val"]
    n_ev = counts["val"] if phase == "val" else counts["test"]
    hi_n, ho_n = info.n_heldin, info.n_heldout
    out = {"train_spikes_heldin": (n_tr, T, hi_n), "train_spikes_heldout": (n_tr, T, ho_n),
           "train_spikes_heldin_forward": (n_tr, F, hi_n), "train_spikes_heldout_forward": (n_tr, F, ho_n),
           "eval_spikes_heldin": (n_ev, T, hi_n)}
    if phase == "val":
        out.update({"eval_spikes_heldout": (n_ev, T, ho_n), "eval_spikes_heldin_forward": (n_ev, F, hi_n),
                    "eval_spikes_heldout_forward": (n_ev, F, ho_n)})
    return out


def check_dataset(name: str, raw_dir: Path, cache_dir: Path | None = None,
                  tensors: bool = True) -> tuple[list[str], list[str]]:
    """``(report lines, mismatch lines)`` for one dataset under ``raw_dir``."""
    from .tensors import DataFileError, load_tensors

    info = DATASETS[name]
    raw_dir = Path(raw_dir)
    report, bad = [], []
    paths = [p for p in (info.train_path(raw_dir), info.test_path(raw_dir))]
    for p in paths:
        if not p.is_file():
            bad.append(f"{name}: file not found: {p}")
    found = [p for p in paths if p.is_file()]
    for p in found:
        facts = file_facts(p)
        report.append(f"{name}: {p.name}: units {facts.n_heldin} held-in / {facts.n_heldout} held-out; trials "
                      + ", ".join(f"{s} {n}" for s, n in sorted(facts.splits.items())))
    if not found:
        return report, bad
    bad += registry_mismatches(info, found)
    bad += field_mismatches(info, found)
    if not tensors or bad:
        return report, bad
    counts, _ = expected_counts(info, info.train_path(raw_dir))
    train_counts = {s: n for s, n in file_facts(found[0]).splits.items()}
    for s in info.unconfirmed:  # the file's own table is the reference for unconfirmed counts
        counts[s] = train_counts.get(s, 0)
    for bin_ms in BIN_SIZES:
        key = dataset_key(name, bin_ms)
        for phase in ("val", "test"):
            try:
                got = load_tensors(key, phase, raw_dir, cache_dir)
            except DataFileError as err:
                bad.append(f"{key} {phase}: {err}")
                continue
            want = expected_tensor_shapes(info, bin_ms, phase, counts)
            report.append(f"{key} {phase}: " + ", ".join(f"{k} {tuple(got[k].shape)}" for k in want))
            for k, shape in want.items():
                if tuple(got[k].shape) != shape:
                    bad.append(f"{key} {phase}: {k} has shape {tuple(got[k].shape)}, expected {shape}")
    return report, bad
