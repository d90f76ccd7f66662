"""NLB-format NWB stand-ins with known rates, and their hidden test targets.

Why: the real datasets are gigabytes behind a network and their test targets are hidden on
EvalAI. A stand-in lets every stage (tensors, training, search, ensembles, submission) run and be
scored end to end, offline and fast, against a ground truth we know.

What is written for a dataset, under ``<root>/<dandiset>/sub-<subject>/`` (the DANDI layout):

* the train NWB (train + val trials, held-in and held-out units, behaviour) and the test NWB
  (test trials, held-in units only), carrying every field nlb_tools' ``make_tensors.PARAMS``
  reads for that dataset, with the registry's unit and (at scale 1) trial counts; the maze
  datasets in the DANDI layout of trial segments (one ``obs_intervals`` row per unit and trial,
  behaviour timestamps only inside trials, unrecorded time between trials), mc_rtt and area2_bump
  as continuous recordings;
* ``eval_data_test.h5``: the hidden test targets in the format of nlb_tools' ``eval_data_test.h5``
  (one group per dataset key, 5 and 20 ms), made by nlb_tools' own ``make_eval_target_tensors``
  from a private file that still holds the test trials' held-out units;
* ``true_rates.h5``: the ground-truth rates (expected counts per bin) as the six ``RATE_KEYS``
  tensors per dataset key and phase, cut by nlb_tools exactly like the spike tensors;
* ``<root>/synthetic_manifest.json`` naming each dataset's seed, scale and nlbpipe version.

The generative model (``synthetic_model``): a few latent dimensions follow nonlinear dynamics (damped rotations with a
``tanh`` coupling, plus condition-dependent preparatory and condition-invariant components);
condition-dependent initial states set each trial's trajectory; a random one-hidden-layer readout
(``tanh``) maps latents to per-neuron log rates; spikes are Poisson at 1 ms. Behaviour (hand or
finger velocity) is a linear readout of the movement latents shifted by the dataset's decoding lag,
so it is decodable from rates as in NLB. dmfc_rsg's latents run along a fixed path whose speed is
set by the produced interval ``tp``, so neural speed correlates with ``tp`` as in the real data.
How realistic the rates drawn from the latents are (firing rates, modulation, held-out map,
trial-to-trial variability, behaviour noise) is ``synthetic_rates``' business (``realism``).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from . import __version__
from .contracts import EVAL_TARGETS_NAME, PHASES, TRUE_RATES_NAME, check_phase
from .contracts import SYNTHETIC_MANIFEST as MANIFEST_NAME
from .datasets import BIN_SIZES, DATASETS, DatasetInfo, dataset_key, resolve
from .errors import NlbpipeError
from .fileio import atomic_path, write_json_atomic
from .rates import RATE_KEYS
from .settings import get_settings
from .synthetic_model import _Model, _Session, _simulate, _spike_times, _truth_1ms
from .synthetic_rates import DEFAULT_REALISM, check_realism

logger = logging.getLogger(__name__)

SYNTHETIC_MARK = "nlbpipe synthetic stand-in"

_TRUTH_FIELDS = {"spk_field": "truth_spikes", "hospk_field": "truth_heldout_spikes"}


class SyntheticError(NlbpipeError, RuntimeError):
    """A synthetic root that cannot be written or read (names the folder or file)."""


# --------------------------------------------------------------------------------------------
# Spikes and NWB files
# --------------------------------------------------------------------------------------------
def standin_scale(path: Path) -> float | None:
    """The ``--scale`` a stand-in NWB was written at (from its session_description); None if real."""
    import re

    try:
        with h5py.File(path, "r") as f:
            desc = f["session_description"][()]
    except (OSError, KeyError):
        return None
    desc = desc.decode("utf-8", "replace") if isinstance(desc, bytes) else str(desc)
    found = re.search(r"scale ([0-9.eE+-]+)", desc) if SYNTHETIC_MARK in desc else None
    return float(found.group(1)) if found else None


_TRIAL_DESCRIPTIONS = {
    "split": "NLB data split: train, val or test",
}


# --------------------------------------------------------------------------------------------
# The DANDI layout: maze train/test files hold trial segments, not a continuous recording
# --------------------------------------------------------------------------------------------
SEGMENTED = ("mc_maze", "mc_maze_large", "mc_maze_medium", "mc_maze_small")  # mc_rtt, area2_bump: continuous
_ITI_MS = 200  # unrecorded time between two maze trial segments


def _with_intertrial_gaps(session: _Session, gap_ms: int = _ITI_MS) -> _Session:
    """The session with ``gap_ms`` of rest after every trial (zero latents and velocity, held
    position): the time between the trial segments of a DANDI maze file."""
    t = session.trials
    starts = np.round(t["start_time"].to_numpy() * 1000).astype(int)
    bounds = list(starts[1:]) + [session.n_ms]
    pieces, beh = [session.latents[: starts[0]]], {k: [v[: starts[0]]] for k, v in session.behavior.items()}
    for a, b in zip(starts, bounds):
        pieces += [session.latents[a:b], np.zeros((gap_ms, session.latents.shape[1]), np.float32)]
        for k, v in session.behavior.items():
            rest = np.zeros((gap_ms, v.shape[1]), v.dtype) if k.endswith("_vel") else np.repeat(v[b - 1:b], gap_ms, 0)
            beh[k] += [v[a:b], rest]
    trials = t.copy()
    shift = np.arange(len(t)) * gap_ms / 1000.0
    for c in trials.columns:
        if c.endswith("_time"):
            trials[c] = trials[c] + shift
    return _Session(np.concatenate(pieces), trials, {k: np.concatenate(v) for k, v in beh.items()})


def _trial_segments(session: _Session) -> np.ndarray:
    """``[trials, 2]`` (s): each trial's recorded segment, its start to its stop."""
    return session.trials[["start_time", "stop_time"]].to_numpy(dtype=np.float64)


def _inside(times: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Which of the sorted ``times`` fall inside some ``[start, stop)`` segment."""
    edges = segments.ravel()
    return (np.searchsorted(edges, times, side="right") % 2) == 1


def _write_nwb(path: Path, info: DatasetInfo, kind: str, session: _Session, spikes: list[np.ndarray],
               heldout: np.ndarray, units: np.ndarray, with_behavior: bool, seed: int, scale: float,
               drop_trial_fields=(), segments: np.ndarray | None = None):
    """Write one NLB-layout NWB file (atomically) with the given units, trials and behaviour.

    ``segments`` (``[n, 2]`` s): the DANDI maze layout, one ``obs_intervals`` row per unit and
    segment, spikes and behaviour rows (with timestamps) only inside them; None: continuous.
    """
    from hdmf.common import VectorData, VectorIndex
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.file import Subject
    from pynwb.misc import Units

    T_s = session.n_ms / 1000.0
    nwb = NWBFile(
        session_description=(
            f"{SYNTHETIC_MARK} for NLB'21 {info.name} ({kind} file), NOT real data: "
            f"nlbpipe {__version__}, seed {seed}, scale {scale}"
        ),
        identifier=f"nlbpipe-synthetic-{info.name}-{kind}-seed{seed}-scale{scale}",
        session_start_time=_dt.datetime(2021, 1, 1, tzinfo=_dt.timezone.utc),
        experiment_description=f"synthetic stand-in for DANDI {info.dandiset}",
    )
    nwb.subject = Subject(subject_id=info.subject, species="Macaca mulatta",
                          description="synthetic (nlbpipe)")
    trials = session.trials.drop(columns=[c for c in drop_trial_fields if c in session.trials])
    extra = [c for c in trials.columns if c not in ("start_time", "stop_time")]
    for col in extra:
        nwb.add_trial_column(name=col, description=_TRIAL_DESCRIPTIONS.get(col, col))
    records = trials.to_dict("records")
    for rec in records:
        nwb.add_trial(**{k: (str(v) if isinstance(v, str) else v) for k, v in rec.items()})
    # the units table in one go (add_unit converts every spike time one by one: slow)
    trains = [np.asarray(spikes[n], dtype=np.float64) for n in units]
    if segments is not None:
        trains = [tr[_inside(tr, segments)] for tr in trains]
    spike_times = VectorData(name="spike_times", description="spike times (s)",
                             data=np.concatenate(trains) if trains else np.zeros(0))
    spike_index = VectorIndex(name="spike_times_index", target=spike_times,
                              data=np.cumsum([len(t) for t in trains]).astype(np.int64))
    per_unit = np.array([[0.0, T_s]]) if segments is None else np.asarray(segments, dtype=np.float64)
    obs = VectorData(name="obs_intervals", description="observation intervals (s)",
                     data=np.tile(per_unit, (len(units), 1)))
    obs_index = VectorIndex(name="obs_intervals_index", target=obs,
                            data=np.arange(1, len(units) + 1, dtype=np.int64) * len(per_unit))
    held = VectorData(name="heldout", description="held-out unit (NLB co-smoothing target)",
                      data=np.asarray(heldout[units], dtype=bool))
    nwb.units = Units(name="units", description="sorted units (synthetic)", id=[int(n) for n in units],
                      columns=[spike_times, spike_index, obs, obs_index, held])
    if with_behavior and session.behavior:
        module = nwb.create_processing_module("behavior", "behavioural data (synthetic)")
        for name, arr in session.behavior.items():
            unit = "mm/s" if name.endswith("vel") else "mm"
            if segments is None:
                module.add(TimeSeries(name=name, data=arr, unit=unit, rate=1000.0, starting_time=0.0,
                                      comments="columns=[x,y]", description=f"synthetic {name}"))
                continue
            ms = np.arange(arr.shape[0])
            keep = _inside(ms / 1000.0, np.round(segments, 3))
            module.add(TimeSeries(name=name, data=arr[keep], unit=unit, timestamps=ms[keep] / 1000.0,
                                  comments="columns=[x,y]", description=f"synthetic {name} (inside trials)"))
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not end in '.nwb'.*")
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
    return path


def _offset_session(a: _Session, b: _Session) -> tuple[_Session, int]:
    """Concatenate two recordings, ``b`` starting at the next whole second after ``a``."""
    shift = int(np.ceil(a.n_ms / 1000.0) * 1000)
    gap = shift - a.n_ms
    d = a.latents.shape[1]
    latents = np.concatenate([a.latents, np.zeros((gap, d), np.float32), b.latents])
    tb = b.trials.copy()
    for c in tb.columns:
        if c.endswith("_time"):
            tb[c] = tb[c] + shift / 1000.0
    trials = pd.concat([a.trials, tb], ignore_index=True)
    behavior = {}
    for k in a.behavior:
        z = np.zeros((gap, a.behavior[k].shape[1]), np.float32)
        behavior[k] = np.concatenate([a.behavior[k], z, b.behavior[k]])
    return _Session(latents, trials, behavior), shift


# --------------------------------------------------------------------------------------------
# Targets and truth through nlb_tools
# --------------------------------------------------------------------------------------------
def _truth_tensors(ds, name: str, mask) -> dict:
    from nlb_tools.make_tensors import make_train_input_tensors

    return make_train_input_tensors(ds, name, trial_split=mask, update_params=dict(_TRUTH_FIELDS),
                                    include_forward_pred=True, save_file=False)


def _phase_truth(ds, name: str, phase: str) -> dict:
    split = ds.trial_info.split
    train_mask = split == "train" if phase == "val" else split.isin(["train", "val"])
    eval_mask = split == ("val" if phase == "val" else "test")
    tr = _truth_tensors(ds, name, train_mask)
    ev = _truth_tensors(ds, name, eval_mask)
    out = {
        "train_rates_heldin": tr["train_spikes_heldin"],
        "train_rates_heldout": tr["train_spikes_heldout"],
        "eval_rates_heldin": ev["train_spikes_heldin"],
        "eval_rates_heldout": ev["train_spikes_heldout"],
        "eval_rates_heldin_forward": ev["train_spikes_heldin_forward"],
        "eval_rates_heldout_forward": ev["train_spikes_heldout_forward"],
    }
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def _targets_and_truth(hidden_path: Path, info: DatasetInfo, model: _Model, full: _Session):
    """Hidden test targets and ground-truth rate tensors, for both bin sizes, via nlb_tools."""
    from nlb_tools.make_tensors import PARAMS, make_eval_target_tensors

    from .nwbload import open_nwb_dataset

    name = info.name
    ds = open_nwb_dataset(hidden_path)
    truth = _truth_1ms(model, full.latents)
    n_in = info.n_heldin
    ds.add_continuous_data(truth[:, :n_in], "truth_spikes", chan_names=ds.data["spikes"].columns)
    ds.add_continuous_data(truth[:, n_in:], "truth_heldout_spikes",
                           chan_names=ds.data["heldout_spikes"].columns)
    del truth
    targets, true_rates = {}, {}
    for bin_ms in BIN_SIZES:
        key = dataset_key(name, bin_ms)
        ds.resample(bin_ms)
        got = make_eval_target_tensors(ds, name, train_trial_split=["train", "val"],
                                       eval_trial_split="test", save_file=False,
                                       include_psth="psth_params" in PARAMS[name])
        targets[key] = got[key]
        true_rates[key] = {phase: _phase_truth(ds, name, phase) for phase in PHASES}
    return targets, true_rates


def _save_nested_h5(path: Path, data: dict, **attrs):
    """nlb_tools' own h5 layout (``save_to_h5``), written atomically."""
    from nlb_tools.make_tensors import save_to_h5

    with atomic_path(path) as tmp:
        tmp.unlink()
        save_to_h5(data, str(tmp), overwrite=True)
        with h5py.File(tmp, "a") as f:
            for k, v in attrs.items():
                f.attrs[k] = v


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def synthetic_files(dataset: str, root: Path) -> dict[str, Path]:
    """Where the stand-in for ``dataset`` lives under ``root``."""
    info = DATASETS[dataset]
    folder = info.train_path(root).parent
    return {
        "train": info.train_path(root),
        "test": info.test_path(root),
        "eval_targets": folder / EVAL_TARGETS_NAME,
        "true_rates": folder / TRUE_RATES_NAME,
    }


def is_synthetic_nwb(path: Path) -> bool:
    """Whether an NWB file was written by this module (its session_description says so)."""
    try:
        with h5py.File(path, "r") as f:
            desc = f["session_description"][()]
    except (OSError, KeyError):
        return False
    if isinstance(desc, bytes):
        desc = desc.decode("utf-8", "replace")
    return SYNTHETIC_MARK in str(desc)


def _check_not_real(folder: Path):
    """Refuse to write stand-ins into a folder that holds real downloads."""
    if not folder.is_dir():
        return
    for nwb in folder.glob("*.nwb"):
        if not is_synthetic_nwb(nwb):
            raise SyntheticError(
                f"{folder} holds real (non-synthetic) data ({nwb.name}); synthetic stand-ins "
                "go under their own root (NLB_SYNTHETIC_RAW), never beside real downloads"
            )


def written_standin(dataset: str, root: Path) -> dict | None:
    """The manifest entry (seed, scale, realism, ...) of the stand-in of ``dataset`` under ``root``, if any."""
    return _read_manifest(Path(root)).get("datasets", {}).get(dataset)


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SyntheticError(f"{path} is not a readable synthetic manifest: {err}") from err


def write_synthetic(dataset: str, root: Path | None = None, seed: int = 0, scale: float = 1.0,
                    force=False, targets: bool = True, realism: str = DEFAULT_REALISM) -> list[Path]:
    """Write the stand-in for ``dataset`` under ``root`` (default NLB_SYNTHETIC_RAW).

    Skips the work when the manifest says the same seed and scale are already there and every
    file exists (``force`` rewrites); refuses, without ``force``, to replace files of another seed
    or scale. ``targets=False`` leaves out the hidden test targets and
    true rates (most of the cost: nlb_tools' PSTHs), for callers that only need the NWB files.
    ``realism`` is ``realistic`` (firing like the real files, ``synthetic_rates``) or ``easy``.
    Returns the paths of the written (or present) files.
    """
    if dataset not in DATASETS:
        # accept a dataset key too ("mc_maze_small_20" -> mc_maze_small): files hold both bins
        info, _ = resolve(dataset)
    else:
        info = DATASETS[dataset]
    if not (0 < float(scale) <= 1.0):
        raise SyntheticError(f"--scale must be in (0, 1], got {scale}")
    try:
        check_realism(realism)
    except ValueError as err:
        raise SyntheticError(str(err)) from None
    root = Path(root) if root is not None else get_settings().synthetic_raw
    root = root.expanduser().absolute()
    files = synthetic_files(info.name, root)
    folder = files["train"].parent
    _check_not_real(folder)
    manifest = _read_manifest(root)
    entry = {"dataset": info.name, "seed": int(seed), "scale": float(scale), "nlbpipe_version": __version__,
             "targets": bool(targets), "realism": realism}
    paths = [files["train"], files["test"]]
    if targets:
        paths += [files["eval_targets"], files["true_rates"]]
    present = manifest.get("datasets", {}).get(info.name)
    if not force and present == entry and all(p.is_file() for p in paths):
        logger.info("synthetic %s already present under %s", info.name, root)
        return paths
    if (not force and present and files["train"].is_file()
            and (present.get("seed"), present.get("scale"), present.get("realism", DEFAULT_REALISM))
            != (entry["seed"], entry["scale"], entry["realism"])):
        raise SyntheticError(
            f"{folder} holds synthetic {info.name} written with seed {present.get('seed')}, scale "
            f"{present.get('scale')}, realism {present.get('realism', DEFAULT_REALISM)}; --seed {seed} "
            f"--scale {scale} ({realism}) would replace it and invalidate every tensor, "
            "experiment and submission built on it: add --force to rewrite, or set NLB_SYNTHETIC_RAW elsewhere")
    if present:  # until the new files are all written, the manifest vouches for none of them
        manifest["datasets"].pop(info.name)
        write_json_atomic(root / MANIFEST_NAME, manifest)

    model, rng, trainval, test = _simulate(info, int(seed), float(scale), realism)
    segmented = info.name in SEGMENTED
    if segmented:
        trainval, test = _with_intertrial_gaps(trainval), _with_intertrial_gaps(test)
    full, _ = _offset_session(trainval, test)
    spikes = _spike_times(model, rng, full.latents)
    shift = int(np.ceil(trainval.n_ms / 1000.0) * 1000)
    spikes_trainval = [s[s < trainval.n_ms / 1000.0] for s in spikes]
    spikes_test = [s[s >= shift / 1000.0] - shift / 1000.0 for s in spikes]
    heldout = np.arange(info.n_neurons) >= info.n_heldin
    all_units = np.arange(info.n_neurons)
    heldin_units = all_units[~heldout]
    folder.mkdir(parents=True, exist_ok=True)
    drop_test = ("tp", "is_outlier") if info.name == "dmfc_rsg" else ()
    if targets:
        with tempfile.TemporaryDirectory(prefix=".nlbpipe-synthetic-", dir=root) as tmpdir:
            hidden = Path(tmpdir) / "hidden_full.nwb"
            _write_nwb(hidden, info, "hidden", full, spikes, heldout, all_units, True, seed, scale)
            eval_targets, truth = _targets_and_truth(hidden, info, model, full)
    else:  # stale targets of an earlier seed must not survive beside new NWB files
        files["eval_targets"].unlink(missing_ok=True)
        files["true_rates"].unlink(missing_ok=True)
    _write_nwb(files["train"], info, "train", trainval, spikes_trainval, heldout, all_units, True, seed, scale,
               segments=_trial_segments(trainval) if segmented else None)
    _write_nwb(files["test"], info, "test", test, spikes_test, heldout, heldin_units, False, seed, scale,
               drop_trial_fields=drop_test, segments=_trial_segments(test) if segmented else None)
    if targets:
        _save_nested_h5(files["eval_targets"], eval_targets, synthetic=SYNTHETIC_MARK, seed=int(seed),
                        scale=float(scale))
        _save_nested_h5(files["true_rates"], truth, synthetic=SYNTHETIC_MARK, seed=int(seed),
                        scale=float(scale))
    manifest = _read_manifest(root)  # re-read: another dataset may have been added meanwhile
    manifest.setdefault("synthetic", SYNTHETIC_MARK)
    manifest.setdefault("datasets", {})[info.name] = entry
    write_json_atomic(root / MANIFEST_NAME, manifest)
    return paths


def true_rates(dataset_key: str, phase: str, root: Path | None = None) -> dict:
    """Ground-truth rates (expected counts per bin) as the six ``RATE_KEYS`` tensors."""
    check_phase(phase)
    info, _ = resolve(dataset_key)
    root = Path(root) if root is not None else get_settings().synthetic_raw
    path = synthetic_files(info.name, root)["true_rates"]
    if not path.is_file():
        raise SyntheticError(f"no ground truth for {dataset_key}: {path} is missing "
                             f"(write it with: download_data.py --synthetic {info.name})")
    with h5py.File(path, "r") as f:
        if dataset_key not in f or phase not in f[dataset_key]:
            raise SyntheticError(f"{path} holds no {dataset_key}/{phase} rates")
        group = f[dataset_key][phase]
        return {k: group[k][()].astype(np.float32) for k in RATE_KEYS}
