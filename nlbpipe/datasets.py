"""The seven NLB'21 datasets as one table, and the dataset keys built from them.

A dataset key is a registry name plus ``_20`` for 20 ms bins (``mc_maze_small`` is 5 ms,
``mc_maze_small_20`` is 20 ms): the same names nlb_tools and EvalAI use for submission groups.
File names are relative to ``<raw>/<dandiset>/``, exactly the DANDI layout, so a folder of real
downloads and a folder of synthetic stand-ins are read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import NlbpipeError

BIN_SIZES = (5, 20)


class UnknownDatasetError(NlbpipeError, ValueError):
    """A dataset name or key that is not one of the seven (the message lists the valid ones)."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    dandiset: str
    version: str
    subject: str
    train_file: str
    test_file: str
    n_heldin: int
    n_heldout: int
    n_train: int
    n_val: int
    n_test: int

    def train_path(self, raw_dir) -> Path:
        return Path(raw_dir) / self.dandiset / self.train_file

    def test_path(self, raw_dir) -> Path:
        return Path(raw_dir) / self.dandiset / self.test_file

    @property
    def n_neurons(self) -> int:
        return self.n_heldin + self.n_heldout


def _info(name, dandiset, version, subject, session, has_behavior, heldin, heldout, train, val, test):
    ses = f"_ses-{session}" if session else ""
    kind = "behavior+ecephys" if has_behavior else "ecephys"
    return DatasetInfo(
        name=name,
        dandiset=dandiset,
        version=version,
        subject=subject,
        train_file=f"sub-{subject}/sub-{subject}{ses}_desc-train_{kind}.nwb",
        test_file=f"sub-{subject}/sub-{subject}{ses}_desc-test_ecephys.nwb",
        n_heldin=heldin,
        n_heldout=heldout,
        n_train=train,
        n_val=val,
        n_test=test,
    )


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        _info("mc_maze", "000128", "0.220113.0400", "Jenkins", "full", True, 137, 45, 1721, 574, 574),
        _info("mc_rtt", "000129", "0.241017.1444", "Indy", None, True, 98, 32, 1080, 271, 271),
        _info("area2_bump", "000127", "0.220113.0359", "Han", None, True, 49, 16, 272, 92, 100),
        _info("dmfc_rsg", "000130", "0.220113.0407", "Haydn", None, False, 45, 15, 754, 252, 289),
        _info("mc_maze_large", "000138", "0.220113.0407", "Jenkins", "large", True, 122, 40, 375, 125, 100),
        _info("mc_maze_medium", "000139", "0.220113.0408", "Jenkins", "medium", True, 114, 38, 188, 62, 100),
        _info("mc_maze_small", "000140", "0.220113.0408", "Jenkins", "small", True, 107, 35, 75, 25, 100),
    )
}


def dataset_key(name: str, bin_ms: int) -> str:
    """``("mc_maze", 20) -> "mc_maze_20"``; 5 ms keys are the bare name."""
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    if bin_ms not in BIN_SIZES:
        raise UnknownDatasetError(f"unsupported bin size {bin_ms} ms for {name}; valid: {BIN_SIZES}")
    return name if bin_ms == 5 else f"{name}_{bin_ms}"


def all_keys() -> list[str]:
    """The 14 dataset keys: each dataset at 5 then 20 ms."""
    return [dataset_key(name, b) for name in DATASETS for b in BIN_SIZES]


def resolve(key: str) -> tuple[DatasetInfo, int]:
    """``"mc_maze_20" -> (DATASETS["mc_maze"], 20)``; ``"mc_maze_small" -> (.., 5)``."""
    if isinstance(key, str):
        if key in DATASETS:
            return DATASETS[key], 5
        for b in BIN_SIZES[1:]:
            suffix = f"_{b}"
            if key.endswith(suffix) and key[: -len(suffix)] in DATASETS:
                return DATASETS[key[: -len(suffix)]], b
    raise UnknownDatasetError(f"unknown dataset key {key!r}; valid keys: {', '.join(all_keys())}")
