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
    unconfirmed: tuple[str, ...] = ()  # splits whose trial counts the archive's metadata does not give

    def train_path(self, raw_dir) -> Path:
        return Path(raw_dir) / self.dandiset / self.train_file

    def test_path(self, raw_dir) -> Path:
        return Path(raw_dir) / self.dandiset / self.test_file

    @property
    def n_neurons(self) -> int:
        return self.n_heldin + self.n_heldout


def _info(name, dandiset, version, subject, session, has_behavior, heldin, heldout, train, val, test,
          unconfirmed=()):
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
        unconfirmed=tuple(unconfirmed),
    )


# Units and trials per split, as the DANDI archive serves the pinned versions. Sources: the DANDI
# asset summaries of dandisets 000128 (mc_maze), 000129 (mc_rtt), 000127 (area2_bump), 000130
# (dmfc_rsg), 000138 / 000139 / 000140 (mc_maze_large / medium / small): units in the train file =
# held-in + held-out, units in the test file = held-in, trial rows in the test file = test; the
# train/val split of the train file's trials from nlb_tools' split column (NLB'21 paper, Table 1).
# - dmfc_rsg: the files regenerated 2021-10-29 hold 54 units (40 held-in / 14 held-out) and 283 test
#   trials (nlb_tools' tutorial table, 45 / 15 and 289, predates the regeneration). Its train/val
#   counts (754 / 252, the tutorial's) could not be confirmed from the archive's metadata: they are
#   marked unconfirmed, and the loader checks them against the file's own trials table instead.
# - mc_rtt: 810 train / 270 val / 272 test (1080 is train + val). n_train is the train split alone
#   for every dataset.
# - area2_bump: 98 test trials.
DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        _info("mc_maze", "000128", "0.220113.0400", "Jenkins", "full", True, 137, 45, 1721, 574, 574),
        _info("mc_rtt", "000129", "0.241017.1444", "Indy", None, True, 98, 32, 810, 270, 272),
        _info("area2_bump", "000127", "0.220113.0359", "Han", None, True, 49, 16, 272, 92, 98),
        _info("dmfc_rsg", "000130", "0.220113.0407", "Haydn", None, False, 40, 14, 754, 252, 283,
              unconfirmed=("train", "val")),
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


def bin_ms_of(key: str) -> int | None:
    """The bin size of an NLB key (``"mc_maze_20" -> 20``), or None for a name that is not one."""
    try:
        return resolve(key)[1]
    except UnknownDatasetError:
        return None


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
