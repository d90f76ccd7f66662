"""nlb_tools tensors for a dataset key and phase, cached as ``.h5``.

Why a cache: building tensors means loading an NWB file into pandas at 1 ms and re-binning it,
which takes seconds to minutes; every training run needs the same arrays. The cache file records a
fingerprint of the source NWB files (path, size, modification time) and is rebuilt when they
change. Everything is made by nlb_tools itself (``NWBDataset``, ``make_train_input_tensors``,
``make_eval_input_tensors``, ``make_eval_target_tensors``) so the arrays are exactly the
benchmark's.

Phases: ``val`` trains on the train split and evaluates on val (targets known, built here);
``test`` trains on train+val and evaluates on test (held-out targets hidden; a synthetic
stand-in keeps them in ``eval_data_test.h5`` beside the test NWB).

Checks: before a build, the files' units and trials against the registry (``check_registry``: a
dataset's files under another's name fail in one line); after it, the trials in each tensor against
the files' own trials tables (``check_tensor_trials``: a lost trial is an error, never a silent drop).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from .contracts import EVAL_TARGETS_NAME, SCORED_KEY, check_phase
from .datasets import DatasetInfo, resolve
from .errors import NlbpipeError
from .fileio import atomic_path
from .settings import get_settings

logger = logging.getLogger(__name__)

CACHE_FORMAT = 3  # 3: + SCORED_KEY; 2: built window by window (nlbpipe.windowed_tensors); 1: by nlb_tools
VAL_KEYS = (
    "train_spikes_heldin",
    "train_spikes_heldout",
    "train_spikes_heldin_forward",
    "train_spikes_heldout_forward",
    "eval_spikes_heldin",
    "eval_spikes_heldout",
    "eval_spikes_heldin_forward",
    "eval_spikes_heldout_forward",
    SCORED_KEY,
)
TEST_KEYS = (
    "train_spikes_heldin",
    "train_spikes_heldout",
    "train_spikes_heldin_forward",
    "train_spikes_heldout_forward",
    "eval_spikes_heldin",
)


class DataFileError(NlbpipeError):
    """A missing or unreadable NWB (or targets) file; the message names it."""


def _sources(info: DatasetInfo, phase: str, raw_dir: Path) -> list[Path]:
    paths = [info.train_path(raw_dir)]
    if phase == "test":
        paths.append(info.test_path(raw_dir))
    for p in paths:
        if not p.is_file():
            raise DataFileError(
                f"{info.name}: NWB file not found: {p} (download it with `download_data.py "
                f"{info.name}`, or point NLB_DATA_RAW at the folder holding {info.dandiset}/)"
            )
    return paths


def _fingerprint(paths: list[Path], dataset_key: str, phase: str) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT}|{dataset_key}|{phase}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _readable(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return "units" in f and "intervals" in f and "trials" in f["intervals"]
    except OSError:
        return False


def _check_readable(paths: list[Path]) -> None:
    for p in paths:
        if not _readable(p):
            raise DataFileError(f"{p} is not a readable NLB NWB file (corrupt, truncated, or lacks "
                                "units/trials); delete it and download it again")


def _open_dataset(info: DatasetInfo, bin_ms: int, phase: str, paths: list[Path]):
    """Load with nlb_tools (``nlbpipe.nwbload``: sorted, whole) and re-bin; errors name the files."""
    from .nwbload import TrialCountError, open_nwb_dataset

    _check_readable(paths)
    try:
        ds = open_nwb_dataset(paths)
        ds.resample(bin_ms)
    except TrialCountError as err:
        raise DataFileError(str(err)) from err
    except Exception as err:  # nlb_tools raises bare asserts/KeyErrors on malformed files
        raise DataFileError(f"cannot load {', '.join(map(str, paths))} with nlb_tools: "
                            f"{type(err).__name__}: {err}") from err
    return ds


def check_tensor_trials(tensors: dict, paths: list[Path], phase: str, dataset_key: str) -> None:
    """Train/eval tensors hold exactly the trials of their splits in the files' own trials tables."""
    from .nwbload import file_split_counts

    counts = {}
    for p in paths:
        for split, n in file_split_counts(p).items():
            counts[split] = counts.get(split, 0) + n
    train_splits = ("train",) if phase == "val" else ("train", "val")
    eval_split = "val" if phase == "val" else "test"
    for prefix, splits in (("train", train_splits), ("eval", (eval_split,))):
        want = sum(counts.get(s, 0) for s in splits)
        got = int(np.shape(tensors[f"{prefix}_spikes_heldin"])[0])
        if got != want:
            raise DataFileError(f"{dataset_key} {phase}: {prefix}_spikes_heldin holds {got} trials but the "
                                f"trials table of {', '.join(map(str, paths))} has {want} in split "
                                f"{'+'.join(splits)}")


def check_registry(info: DatasetInfo, phase: str, paths: list[Path]) -> None:
    """Units and trials of the files against the registry: another dataset's files under this name
    fail here, in one line naming the file, the expected and the found counts."""
    from .nwbfacts import registry_mismatches

    problems = registry_mismatches(info, paths, phase)
    if problems:
        raise DataFileError(problems[0] + (f" (and {len(problems) - 1} more mismatches: "
                                           f"download_data.py --check {info.name})" if len(problems) > 1 else ""))


def _build(info: DatasetInfo, dataset_key: str, phase: str, paths: list[Path], with_psth: bool):
    """Tensors and (``val``) eval targets of one key and phase, straight from nlb_tools.

    PSTHs are costly (nlb_tools reloads and smooths the whole file) and only scoring needs them,
    so ``load_tensors`` builds targets without them and ``load_eval_targets`` with them.
    """
    from nlb_tools.make_tensors import (
        PARAMS,
        make_eval_input_tensors,
        make_eval_target_tensors,
        make_train_input_tensors,
    )

    _, bin_ms = resolve(dataset_key)
    ds = _open_dataset(info, bin_ms, phase, paths)
    name = info.name
    train_split = "train" if phase == "val" else ["train", "val"]
    eval_split = "val" if phase == "val" else "test"
    logger.info("building %s %s tensors with nlb_tools", dataset_key, phase)
    train = make_train_input_tensors(ds, name, trial_split=train_split, include_forward_pred=True,
                                     save_file=False)
    evals = make_eval_input_tensors(ds, name, trial_split=eval_split, save_file=False)
    tensors = {**train, **evals}
    targets = None
    if phase == "val":
        targets = make_eval_target_tensors(ds, name, train_trial_split="train", eval_trial_split="val",
                                           save_file=False,
                                           include_psth=with_psth and "psth_params" in PARAMS[name])
        tensors["eval_spikes_heldin_forward"] = targets[dataset_key]["eval_spikes_heldin_forward"]
        tensors["eval_spikes_heldout_forward"] = targets[dataset_key]["eval_spikes_heldout_forward"]
    if phase == "val":
        tensors[SCORED_KEY] = targets[dataset_key]["eval_spikes_heldout"]
    keys = VAL_KEYS if phase == "val" else TEST_KEYS
    tensors = {k: np.asarray(tensors[k], dtype=np.float32) for k in keys}
    check_tensor_trials(tensors, paths, phase, dataset_key)
    return tensors, targets


def _build_windowed(info: DatasetInfo, dataset_key: str, phase: str, paths: list[Path], with_psth: bool):
    """``_build``'s arrays, cut window by window: memory follows the windows, not the session."""
    from .windowed_tensors import build_windowed

    _check_readable(paths)
    check_registry(info, phase, paths)
    _, bin_ms = resolve(dataset_key)
    logger.info("building %s %s tensors window by window", dataset_key, phase)
    try:
        tensors, targets = build_windowed(info.name, dataset_key, bin_ms, phase, paths, with_psth,
                                          VAL_KEYS, TEST_KEYS)
    except (KeyError, ValueError, OSError) as err:
        raise DataFileError(f"cannot build {dataset_key} {phase} tensors from "
                            f"{', '.join(map(str, paths))}: {type(err).__name__}: {err}") from err
    check_tensor_trials(tensors, paths, phase, dataset_key)
    return tensors, targets


def reference_build(dataset_key: str, phase: str = "val", raw_dir: Path | None = None,
                    with_psth: bool = True):
    """``(tensors, targets)`` straight from nlb_tools (whole-session frames): the reference the
    windowed build is tested and benchmarked against; nothing is cached."""
    check_phase(phase)
    info, _ = resolve(dataset_key)
    raw, _ = _resolve_dirs(raw_dir, None)
    return _build(info, dataset_key, phase, _sources(info, phase, raw), with_psth=with_psth)


def _cache_paths(cache_dir: Path, dataset_key: str, phase: str) -> tuple[Path, Path]:
    return cache_dir / f"{dataset_key}_{phase}.h5", cache_dir / f"{dataset_key}_{phase}_targets.h5"


def _read_cached_tensors(path: Path, fingerprint: str, keys) -> dict | None:
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("fingerprint") != fingerprint or any(k not in f for k in keys):
                return None
            return {k: f[k][()] for k in keys}
    except (OSError, KeyError):
        return None


def _read_cached_targets(path: Path, fingerprint: str | None) -> dict | None:
    from nlb_tools.make_tensors import h5_to_dict

    try:
        with h5py.File(path, "r") as f:
            if fingerprint is not None and f.attrs.get("fingerprint") != fingerprint:
                return None
            return h5_to_dict(f)
    except (OSError, KeyError):
        return None


def _write_tensors(path: Path, tensors: dict, fingerprint: str, dataset_key: str, phase: str):
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for k, v in tensors.items():
                f.create_dataset(k, data=v)
            f.attrs.update(fingerprint=fingerprint, dataset_key=dataset_key, phase=phase,
                           format=CACHE_FORMAT)


def _h5_ready(targets: dict) -> dict:
    """``targets`` with every ``*_cond_idx`` made storable by nlb_tools' ``save_to_h5``.

    nlb_tools builds them with ``np.array(list_of_index_arrays, dtype=object)``: ragged groups give
    a 1-d object array of int arrays (stored as variable-length rows), but groups of one size give a
    2-d object array of ints, which ``save_to_h5`` cannot store (a balanced full-size area2_bump
    stand-in has 17 train trials in each of its 16 conditions). Those become 2-d int arrays: read
    back, each row is still one condition's trial indices.
    """
    out = {}
    for key, val in targets.items():
        if isinstance(val, dict):
            out[key] = _h5_ready(val)
        elif isinstance(val, np.ndarray) and val.dtype == object and val.ndim == 2:
            out[key] = val.astype(np.int64)
        else:
            out[key] = val
    return out


def _write_targets(path: Path, targets: dict, fingerprint: str):
    from nlb_tools.make_tensors import save_to_h5

    with atomic_path(path) as tmp:
        tmp.unlink()
        save_to_h5(_h5_ready(targets), str(tmp), overwrite=True)
        with h5py.File(tmp, "a") as f:
            f.attrs["fingerprint"] = fingerprint


def _resolve_dirs(raw_dir, cache_dir) -> tuple[Path, Path]:
    s = get_settings()
    raw = Path(raw_dir).expanduser().absolute() if raw_dir is not None else s.data_raw
    cache = Path(cache_dir).expanduser().absolute() if cache_dir is not None else s.cache_dir
    return raw, cache


def load_tensors(dataset_key: str, phase: str = "val", raw_dir: Path | None = None,
                 cache_dir: Path | None = None) -> dict[str, np.ndarray]:
    """The nlb_tools spike tensors of ``dataset_key`` for ``phase``, float32 ``[trials, bins, neurons]``.

    ``val``: ``VAL_KEYS``; ``test``: ``TEST_KEYS`` (train = train+val trials, eval = test trials).
    """
    check_phase(phase)
    info, _ = resolve(dataset_key)
    raw, cache = _resolve_dirs(raw_dir, cache_dir)
    paths = _sources(info, phase, raw)
    fp = _fingerprint(paths, dataset_key, phase)
    tensor_path, target_path = _cache_paths(cache, dataset_key, phase)
    keys = VAL_KEYS if phase == "val" else TEST_KEYS
    cached = _read_cached_tensors(tensor_path, fp, keys)
    if cached is not None:
        return cached
    tensors, _ = _build_windowed(info, dataset_key, phase, paths, with_psth=False)
    _write_tensors(tensor_path, tensors, fp, dataset_key, phase)
    return tensors


def load_eval_targets(dataset_key: str, phase: str = "val", raw_dir=None, cache_dir=None) -> dict:
    """``{dataset_key: {...}}``: what ``nlb_tools.evaluation.evaluate`` takes as its targets.

    ``val``: built by nlb_tools from the train NWB (with PSTHs) and cached. ``test``: read from
    ``eval_data_test.h5`` beside the test NWB (synthetic stand-ins write it; for real data the
    targets are hidden on EvalAI).
    """
    check_phase(phase)
    info, _ = resolve(dataset_key)
    raw, cache = _resolve_dirs(raw_dir, cache_dir)
    if phase == "test":
        path = info.test_path(raw).parent / EVAL_TARGETS_NAME
        if not path.is_file():
            raise DataFileError(
                f"test-phase targets for {dataset_key} not found: {path}. Real NLB test targets are "
                "hidden (score test-phase rates on EvalAI); synthetic stand-ins write this file "
                "(download_data.py --synthetic)"
            )
        targets = _read_cached_targets(path, None)
        if targets is None:
            raise DataFileError(f"{path} is not a readable eval-target h5 file")
        if dataset_key not in targets:
            raise DataFileError(f"{path} holds no targets for {dataset_key} (has {', '.join(targets)})")
        return {dataset_key: targets[dataset_key]}
    paths = _sources(info, phase, raw)
    fp = _fingerprint(paths, dataset_key, phase)
    tensor_path, target_path = _cache_paths(cache, dataset_key, phase)
    cached = _read_cached_targets(target_path, fp)
    if cached is not None and dataset_key in cached:
        return {dataset_key: cached[dataset_key]}
    tensors, targets = _build_windowed(info, dataset_key, phase, paths, with_psth=True)
    _write_tensors(tensor_path, tensors, fp, dataset_key, phase)
    _write_targets(target_path, targets, fp)
    return {dataset_key: targets[dataset_key]}


def read_targets_file(path: str | os.PathLike, dataset_key: str) -> dict:
    """An nlb_tools eval-target ``.h5`` (``{dataset_key: {eval_spikes_heldout, ...}}``) as a dict."""
    from nlb_tools.make_tensors import h5_to_dict

    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"--targets {path}: file not found")
    try:
        with h5py.File(path, "r") as f:
            targets = h5_to_dict(f)
    except OSError as err:
        raise DataFileError(f"--targets {path}: not a readable HDF5 file: {err}") from err
    if dataset_key not in targets or "eval_spikes_heldout" not in targets[dataset_key]:
        raise DataFileError(f"--targets {path}: no {dataset_key}/eval_spikes_heldout; groups: {', '.join(targets) or 'none'}")
    return targets
