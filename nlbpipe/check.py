"""A dataset's NWB files held to the registry and to what nlb_tools needs (``download_data.py --check``).

For each dataset: the files found, units held-in / held-out, trials per split, the trial fields and
behaviour series nlb_tools' ``make_tensors.PARAMS`` reads, and the shapes of the tensors then built,
compared with ``nlbpipe.datasets``. Each mismatch is one line naming the file and what differs.
Files read cheaply with h5py (no session frame); only the tensor shapes need a build (cached).

A synthetic stand-in written at ``--scale`` below 1 is held to its scaled trial counts
(``synthetic.standin_counts``), real files to the registry's; units are the registry's either way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .datasets import BIN_SIZES, DATASETS, DatasetInfo, dataset_key
from .nwbfacts import expected_counts, file_facts, registry_mismatches


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
