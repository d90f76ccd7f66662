"""nlb_tools' ``NWBDataset``, loaded so that the DANDI layout comes back sorted and whole.

The DANDI maze train files hold trial segments: every unit has one ``obs_intervals`` row per
trial and the behaviour series are sampled only inside trials, so their timestamps have gaps.
``NWBDataset.load`` (nlb_tools 0.0.4) joins those series with the spike frame by an outer
``pd.concat``; under pandas 2 the joined time index is then not sorted. Re-binning such a frame
fails (``Inferred frequency None ... does not conform to passed frequency``), and slicing trials
out of a stack of such files silently loses trials. ``SortedNWBDataset`` sorts the frame at the
one place it is built (its ``load``), so the single-file and the directory load both stack and
re-bin a sorted, whole-session frame; the installed nlb_tools is left as it is.

Every place nlbpipe builds an ``NWBDataset`` goes through :func:`open_nwb_dataset`, which also
holds the loaded trials to each file's own trials table (per split): a trial the load loses is an
error naming the file and the split, never a silent drop.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from .errors import NlbpipeError


class TrialCountError(NlbpipeError, ValueError):
    """Trials per split after loading differ from the files' own trials tables (names file and split)."""


def _nwb_dataset_class():
    from nlb_tools.nwb_interface import NWBDataset

    class SortedNWBDataset(NWBDataset):
        """``NWBDataset`` whose per-file frame is sorted by time (gapped behaviour timestamps)."""

        def load(self, fpath, split_heldout=True, skip_fields=[]):  # noqa: B006 (nlb_tools' signature)
            data, trial_info, descriptions, bin_width = super().load(fpath, split_heldout=split_heldout,
                                                                     skip_fields=skip_fields)
            if not data.index.is_monotonic_increasing:
                data = data.sort_index(kind="stable")
            return data, trial_info, descriptions, bin_width

    return SortedNWBDataset


def file_split_counts(path: Path) -> Counter:
    """Trials per split in one file's own trials table (``intervals/trials/split``)."""
    with h5py.File(path, "r") as f:
        trials = f["intervals"]["trials"]
        if "split" not in trials:
            return Counter({"(no split column)": len(trials["id"])})
        values = trials["split"][()]
    return Counter(v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel())


def check_trial_info(trial_info, paths: list[Path]) -> None:
    """The loaded ``trial_info`` holds, per split, exactly the trials of the files' tables."""
    expected = Counter()
    for p in paths:
        expected.update(file_split_counts(p))
    found = Counter(str(s) for s in trial_info["split"]) if "split" in trial_info else Counter()
    for split in sorted(set(expected) | set(found)):
        if expected[split] != found[split]:
            raise TrialCountError(f"{', '.join(map(str, paths))}: split {split!r} has {found[split]} trials "
                                  f"after loading, the file's trials table {expected[split]}")


def open_nwb_dataset(paths: list[Path] | Path):
    """``SortedNWBDataset`` of one file, or of several files of one folder stacked in name order."""
    paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    cls = _nwb_dataset_class()
    if len(paths) == 1:
        ds = cls(str(paths[0]))
    else:  # both files of a dataset: NWBDataset stacks every file of the folder with this prefix
        prefix = os.path.commonprefix([p.name for p in paths])
        folder = paths[0].parent
        found = sorted(folder.glob(prefix + "*.nwb"))
        if [p.resolve() for p in found] != sorted(p.resolve() for p in paths):
            raise TrialCountError(f"{folder}: files matching {prefix}*.nwb are {[p.name for p in found]}, "
                                  f"expected exactly {sorted(p.name for p in paths)}")
        ds = cls(str(folder), prefix)
    check_trial_info(ds.trial_info, paths)
    return ds
