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

The generative model: a few latent dimensions follow nonlinear dynamics (damped rotations with a
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
from dataclasses import dataclass, field
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
from .synthetic_rates import DEFAULT_REALISM, check_realism, realise

logger = logging.getLogger(__name__)

SYNTHETIC_MARK = "nlbpipe synthetic stand-in"

_TRUTH_FIELDS = {"spk_field": "truth_spikes", "hospk_field": "truth_heldout_spikes"}
_PAD_MS = 1000  # recording continues this long after the last trial (forward windows, lags)


class SyntheticError(NlbpipeError, RuntimeError):
    """A synthetic root that cannot be written or read (names the folder or file)."""


# --------------------------------------------------------------------------------------------
# The generative model
# --------------------------------------------------------------------------------------------
@dataclass
class _Model:
    """Latent dynamics, behaviour readout and neural readout shared by all trials of a dataset."""

    rng: np.random.Generator
    n_neurons: int
    d_move: int = 4
    hidden: int = 16
    gain: float = 1.35
    A: np.ndarray = field(init=False)
    K: np.ndarray = field(init=False)
    V: np.ndarray = field(init=False)
    G: np.ndarray = field(init=False)
    h0: np.ndarray = field(init=False)
    C: np.ndarray = field(init=False)
    b: np.ndarray = field(init=False)
    d_total: int = field(init=False)

    def __post_init__(self):
        rng = self.rng
        # damped rotations at two frequencies (per ms), the movement engine
        blocks = []
        for f_hz in (1.2, 2.4)[: self.d_move // 2]:
            w = 2 * np.pi * f_hz / 1000.0
            blocks.append(np.array([[0.0, -w], [w, 0.0]]))
        A = np.zeros((self.d_move, self.d_move))
        for i, blk in enumerate(blocks):
            A[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = blk
        self.A = A - np.eye(self.d_move) / 350.0
        self.K = rng.normal(0, 1.0, (self.d_move, self.d_move))
        self.V = rng.normal(0, 1.0, (2, self.d_move))
        self.V *= 250.0 / np.linalg.norm(self.V, axis=1, keepdims=True)  # speeds of a few 100 mm/s
        self.d_total = self.d_move + 3  # + 2 preparatory/context dims + 1 condition-invariant
        self.G = rng.normal(0, 1.0, (self.hidden, self.d_total)) / np.sqrt(self.d_total) * 1.6
        self.h0 = rng.normal(0, 0.5, self.hidden)
        self.C = rng.normal(0, 1.0, (self.n_neurons, self.hidden)) / np.sqrt(self.hidden) * self.gain
        # baseline ~ 8 spikes/s, log-normal across neurons
        self.b = np.log(8.0 / 1000.0) + rng.normal(0, 0.6, self.n_neurons)

    def run_movement(self, x0: np.ndarray, steps: int, kicks: np.ndarray | None = None) -> np.ndarray:
        """Euler-integrate the nonlinear movement dynamics for a batch: ``[batch, steps, d_move]``."""
        n = x0.shape[0]
        out = np.empty((n, steps, self.d_move), dtype=np.float32)
        x = x0.astype(np.float64).copy()
        eps = 0.004
        noise = self.rng.normal(0, 0.004, (steps, n, self.d_move))
        for t in range(steps):
            if kicks is not None:
                x += kicks[:, t]
            out[:, t] = x
            x = x + x @ self.A.T + eps * np.tanh(x @ self.K.T) + noise[t]
        return out

    def log_rates(self, z: np.ndarray) -> np.ndarray:
        """Latents ``[..., d_total]`` -> log expected spikes per ms ``[..., n_neurons]``."""
        return self.b + np.tanh(z @ self.G.T + self.h0) @ self.C.T

    def velocity(self, x_move: np.ndarray) -> np.ndarray:
        return x_move @ self.V.T


@dataclass
class _Session:
    """One continuous recording at 1 ms: latents, behaviour and a trials table (times in s)."""

    latents: np.ndarray                     # [T, d_total] float32
    trials: pd.DataFrame                    # start_time, stop_time, split, task fields
    behavior: dict = field(default_factory=dict)  # name -> [T, 2] float32

    @property
    def n_ms(self) -> int:
        return self.latents.shape[0]


def _scaled(n: int, scale: float, minimum: int) -> int:
    return max(minimum, int(round(n * scale)))


def _balanced_conditions(rng, splits: np.ndarray, n_conds: int) -> np.ndarray:
    """Condition index per trial: one repeated random cycle through the conditions, dealt to
    the splits in turn, so each split and their union cover the conditions as evenly as possible.
    """
    cycle = np.resize(rng.permutation(n_conds), len(splits))
    cond = np.empty(len(splits), dtype=np.int64)
    start = 0
    for split in ("train", "val", "test"):
        idx = np.flatnonzero(splits == split)
        cond[idx] = rng.permutation(cycle[start : start + idx.size])
        start += idx.size
    return cond


def _assemble(model: _Model, trial_latents: list[np.ndarray], trial_vel: list[np.ndarray] | None):
    """Concatenate per-trial arrays into one recording, with a resting pad at the end."""
    pad = np.zeros((_PAD_MS, model.d_total), dtype=np.float32)
    latents = np.concatenate(trial_latents + [pad])
    behavior = {}
    if trial_vel is not None:
        vel = np.concatenate(trial_vel + [np.zeros((_PAD_MS, 2), np.float32)])
        pos = np.cumsum(vel, axis=0) / 1000.0
        behavior = {"hand_vel": vel, "hand_pos": pos.astype(np.float32)}
    return latents, behavior


def _lagged(x: np.ndarray, lag: int) -> np.ndarray:
    """``out[:, t] = x[:, t - lag]`` with zeros outside the trial (behaviour at the decoding lag)."""
    out = np.zeros_like(x)
    if lag >= 0:
        out[:, lag:] = x[:, : x.shape[1] - lag]
    else:
        out[:, :lag] = x[:, -lag:]
    return out


def _movement_at_onset(model: _Model, x0: np.ndarray, onset: np.ndarray, L: int) -> np.ndarray:
    """[trials, L, d_move]: 750 ms of movement dynamics from ``x0``, starting at each trial's onset."""
    move = model.run_movement(x0, 750)
    x_move = np.zeros((len(x0), L, model.d_move), np.float32)
    for i in range(len(x0)):
        x_move[i, onset[i] : onset[i] + 750] = move[i]
    return x_move


def _assemble_reaches(model: _Model, z: np.ndarray, x_move: np.ndarray, length: np.ndarray, lag: int):
    """Reach trials laid end to end: (latents, behaviour with a cursor, trial start times in ms)."""
    vel = _lagged(model.velocity(x_move), lag)
    lats = [z[i, : length[i]] for i in range(len(z))]
    vels = [vel[i, : length[i]].astype(np.float32) for i in range(len(z))]
    latents, behavior = _assemble(model, lats, vels)
    behavior["cursor_pos"] = behavior["hand_pos"].copy()
    starts = np.concatenate([[0], np.cumsum(length)[:-1]])
    return latents, behavior, starts


def _maze_session(model, rng, n_trials, splits, n_types, lag, cond_states):
    """Delayed center-out reaches through mazes: mc_maze and its scaling versions."""
    n_conds = n_types * 3
    cond = _balanced_conditions(rng, splits, n_conds)
    target_on = np.full(n_trials, 100)
    delay = rng.integers(100, 300, n_trials)
    rt = rng.integers(150, 250, n_trials)
    onset = target_on + delay + rt
    length = onset + 750
    L = int(length.max())
    t = np.arange(L)[None, :]
    prep_state, move_state = cond_states
    x0 = move_state[cond] * (1 + 0.12 * rng.normal(size=(n_trials, 1)))
    x0 += rng.normal(0, 0.15, x0.shape)
    x_move = _movement_at_onset(model, x0, onset, L)
    rise = np.clip(1 - np.exp(-(t - target_on[:, None]) / 80.0), 0, None) * (t >= target_on[:, None])
    fall = np.where(t >= onset[:, None], np.exp(-(t - onset[:, None]) / 150.0), 1.0)
    prep = (rise * fall)[..., None] * prep_state[cond][:, None, :]
    cis = np.exp(-0.5 * ((t - onset[:, None] - 120) / 110.0) ** 2)[..., None] * 1.5
    z = np.concatenate([x_move, prep, cis], axis=-1).astype(np.float32)
    latents, behavior, starts = _assemble_reaches(model, z, x_move, length, lag)
    version = cond % 3
    behavior["eye_pos"] = (behavior["hand_pos"] + rng.normal(0, 2.0, behavior["hand_pos"].shape)).astype(np.float32)
    trials = pd.DataFrame(
        {
            "start_time": starts / 1000.0,
            "stop_time": (starts + length) / 1000.0,
            "split": splits,
            "trial_type": (cond // 3 + 1).astype(np.int64),
            "trial_version": version.astype(np.int64),
            "maze_id": (cond + 1).astype(np.int64),
            "success": np.ones(n_trials, bool),
            "target_on_time": (starts + target_on) / 1000.0,
            "go_cue_time": (starts + target_on + delay) / 1000.0,
            "move_onset_time": (starts + onset) / 1000.0,
            "rt": rt.astype(np.float64),
            "delay": delay.astype(np.float64),
            "num_targets": np.ones(n_trials, np.int64),
        }
    )
    return _Session(latents, trials, behavior)


def _area2_session(model, rng, n_trials, splits, lag, cond_states):
    """Center-out reaches (active) and mechanical bumps (passive) in area 2: area2_bump."""
    n_conds = 16  # 8 directions x {active, passive}
    cond = _balanced_conditions(rng, splits, n_conds)
    direction = cond % 8
    passive = cond >= 8
    target_on = np.full(n_trials, 100)
    go = target_on + rng.integers(200, 400, n_trials)
    onset = go + rng.integers(100, 200, n_trials)
    length = onset + 750
    L = int(length.max())
    t = np.arange(L)[None, :]
    prep_state, move_state = cond_states
    x0 = move_state[cond] * (1 + 0.1 * rng.normal(size=(n_trials, 1))) + rng.normal(0, 0.15, (n_trials, model.d_move))
    x_move = _movement_at_onset(model, x0, onset, L)
    # context: active trials carry a preparatory state after the target appears, passive do not
    rise = (t >= target_on[:, None]) * (1 - np.exp(-np.clip(t - target_on[:, None], 0, None) / 80.0))
    fall = np.where(t >= onset[:, None], np.exp(-(t - onset[:, None]) / 150.0), 1.0)
    prep = (rise * fall * (~passive)[:, None])[..., None] * prep_state[cond][:, None, :]
    cis = np.exp(-0.5 * ((t - onset[:, None] - 60) / 90.0) ** 2)[..., None] * np.where(passive, 2.0, 1.0)[:, None, None]
    z = np.concatenate([x_move, prep, cis], axis=-1).astype(np.float32)
    latents, behavior, starts = _assemble_reaches(model, z, x_move, length, lag)
    cond_dir = (direction * 45).astype(np.float64)
    trials = pd.DataFrame(
        {
            "start_time": starts / 1000.0,
            "stop_time": (starts + length) / 1000.0,
            "split": splits,
            "result": np.full(n_trials, "R"),
            "ctr_hold_bump": passive,
            "cond_dir": cond_dir,
            "bump_dir": np.where(passive, cond_dir, np.nan),
            "target_on_time": (starts + target_on) / 1000.0,
            "go_cue_time": np.where(passive, np.nan, (starts + go) / 1000.0),
            "bump_time": np.where(passive, (starts + onset) / 1000.0, np.nan),
            "move_onset_time": (starts + onset) / 1000.0,
        }
    )
    return _Session(latents, trials, behavior)


def _rtt_session(model, rng, n_trials, splits, lag, cond_states):
    """Self-paced random-target reaching: one continuous recording cut into 600 ms trials."""
    total = n_trials * 600 + _PAD_MS
    stream = 12000  # integrate in parallel streams of this many ms
    n_streams = int(np.ceil(total / stream))
    kicks = np.zeros((n_streams, stream, model.d_move))
    _, move_state = cond_states
    for s in range(n_streams):
        t = int(rng.integers(0, 300))
        while t < stream:
            # a new reach adds to the decaying previous one
            kicks[s, t] = move_state[rng.integers(len(move_state))] * rng.uniform(0.6, 1.2)
            t += int(rng.integers(500, 1000))
    x_move = model.run_movement(np.zeros((n_streams, model.d_move)), stream, kicks=kicks)
    x_move = x_move.reshape(-1, model.d_move)[:total]
    speed = np.linalg.norm(x_move, axis=1, keepdims=True)
    ctx = np.zeros((total, 2), np.float32)
    cis = np.tanh(speed).astype(np.float32)  # a speed-tuned, direction-free component
    z = np.concatenate([x_move, ctx, cis], axis=1).astype(np.float32)
    vel = _lagged(model.velocity(x_move)[None], lag)[0].astype(np.float32)
    pos = (np.cumsum(vel, axis=0) / 1000.0).astype(np.float32)
    starts = np.arange(n_trials) * 600
    behavior = {"finger_vel": vel, "finger_pos": pos, "cursor_pos": pos.copy()}
    # the target a reach heads for: where the finger is 300 ms later, held constant per 600 ms
    target_idx = np.minimum((np.arange(total) // 600) * 600 + 300, total - 1)
    behavior["target_pos"] = pos[target_idx].astype(np.float32)
    trials = pd.DataFrame(
        {"start_time": starts / 1000.0, "stop_time": (starts + 600) / 1000.0, "split": splits}
    )
    return _Session(z, trials, behavior)


_DMFC_TS = {True: (480, 560, 640, 720, 800), False: (800, 900, 1000, 1100, 1200)}


def _dmfc_session(model, rng, n_trials, splits, cond_states):
    """Ready-set-go interval reproduction: dmfc_rsg (behaviour lives in the trials table)."""
    # is_eye x theta x is_short (the 8 groups nlb_tools correlates speed with tp within, each
    # needing 2+ trials per split) x 5 intervals per prior
    cond = _balanced_conditions(rng, splits, 8) + 8 * rng.integers(0, 5, n_trials)
    is_eye = (cond % 2).astype(bool)
    theta = np.where((cond // 2) % 2 == 0, 0.0, 180.0)
    is_short = ((cond // 4) % 2 == 0)
    ts = np.array([_DMFC_TS[bool(s)][k] for s, k in zip(is_short, cond // 8)], dtype=np.float64)
    tp = np.round(ts * (1 + 0.12 * rng.normal(size=n_trials)) + 20.0)
    # a few trials with a wildly wrong tp (nlb_tools masks them); kept to train so every
    # eval group keeps its 2+ trials even at small scale
    outlier = (rng.random(n_trials) < 0.03) & (splits == "train")
    tp = np.where(outlier, np.round(ts * rng.uniform(1.7, 2.2, n_trials)), tp)
    tp = np.maximum(tp, 200.0)
    ready = 1000 + rng.integers(0, 200, n_trials)
    set_ = ready + ts.astype(int)
    go = set_ + tp.astype(int)
    length = go + 700
    L = int(length.max())
    t = np.arange(L)[None, :].astype(np.float64)
    prep_state, move_state = cond_states
    ctx_idx = (is_eye.astype(int) * 2 + (theta > 0).astype(int))
    # measurement: a saturating ramp from ready to set; production: a fixed curved path from
    # set to go traversed in tp ms (so neural speed ~ 1 / tp); then relaxation after go
    meas = np.tanh(np.clip(t - ready[:, None], 0, None) / 700.0) * (t < set_[:, None])
    meas = np.where(t >= set_[:, None], np.tanh(ts[:, None] / 700.0), meas) * (t < go[:, None])
    phase = np.clip((t - set_[:, None]) / tp[:, None], 0, 1) * (t >= set_[:, None])
    after = np.exp(-np.clip(t - go[:, None], 0, None) / 120.0)
    path = np.stack(
        [np.sin(np.pi * phase), np.cos(np.pi * phase) - 1, phase**2, np.sin(2 * np.pi * phase)], axis=-1
    )
    gain_ctx = 1.0 + 0.3 * is_short[:, None, None]
    active = ((t >= set_[:, None]) & (t < go[:, None]))[..., None] + (t >= go[:, None])[..., None] * after[..., None]
    x_move = (path * gain_ctx * 1.6 * active).astype(np.float32)
    ctx = prep_state[ctx_idx][:, None, :] * ((t >= 200)[..., None])
    z = np.concatenate([x_move, ctx, (meas * 1.5)[..., None]], axis=-1).astype(np.float32)
    lats = [z[i, : length[i]] for i in range(n_trials)]
    latents, _ = _assemble(model, lats, None)
    starts = np.concatenate([[0], np.cumsum(length)[:-1]])
    trials = pd.DataFrame(
        {
            "start_time": starts / 1000.0,
            "stop_time": (starts + length) / 1000.0,
            "split": splits,
            "is_eye": is_eye,
            "theta": theta,
            "is_short": is_short,
            "ts": ts,
            "tp": tp,
            "is_outlier": outlier,
            "fix_time": (starts + 200) / 1000.0,
            "target_time": (starts + 600) / 1000.0,
            "ready_time": (starts + ready) / 1000.0,
            "set_time": (starts + set_) / 1000.0,
            "go_time": (starts + go) / 1000.0,
        }
    )
    return _Session(latents, trials, {})


def _condition_states(model: _Model, rng, n_conds: int):
    """Preparatory (2-d) and movement initial (d_move) states per condition, on rings."""
    ang = 2 * np.pi * np.arange(n_conds) / n_conds + rng.uniform(0, 0.3, n_conds)
    amp = rng.uniform(1.4, 2.0, n_conds)
    prep = np.stack([np.cos(ang), np.sin(ang)], 1) * amp[:, None] * 0.8
    basis = rng.normal(size=(model.d_move, 2))
    basis, _ = np.linalg.qr(basis)
    curl = rng.normal(0, 0.5, (n_conds, model.d_move))
    move = (np.stack([np.cos(ang), np.sin(ang)], 1) * amp[:, None]) @ basis.T + curl
    return prep, move


def standin_counts(info: DatasetInfo, scale: float) -> tuple[int, int, int]:
    """Train / val / test trials of a stand-in at ``scale``: the registry's counts at scale 1."""
    min_eval = 16 if info.name == "dmfc_rsg" else 3  # 2 per dmfc tp-correlation group
    return (_scaled(info.n_train, scale, max(6, min_eval)), _scaled(info.n_val, scale, min_eval),
            _scaled(info.n_test, scale, min_eval))


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


def _simulate(info: DatasetInfo, seed: int, scale: float, realism: str = DEFAULT_REALISM):
    """Build the model and the train/val and test recordings of one dataset."""
    ss = np.random.SeedSequence([seed, sorted(DATASETS).index(info.name)])
    rng = np.random.default_rng(ss)
    model = _Model(rng, info.n_neurons)
    n_train, n_val, n_test = standin_counts(info, scale)
    trval_split = np.array(["train"] * n_train + ["val"] * n_val, dtype=object)
    trval_split = rng.permutation(trval_split)
    test_split = np.array(["test"] * n_test, dtype=object)
    name = info.name
    if name.startswith("mc_maze"):
        n_types = 36 if name == "mc_maze" else 9
        states = _condition_states(model, rng, n_types * 3)
        lag = _nlb_lag(name)
        make = lambda n, sp: _maze_session(model, rng, n, sp, n_types, lag, states)
    elif name == "area2_bump":
        states = _condition_states(model, rng, 16)
        make = lambda n, sp: _area2_session(model, rng, n, sp, _nlb_lag(name), states)
    elif name == "mc_rtt":
        states = _condition_states(model, rng, 24)
        make = lambda n, sp: _rtt_session(model, rng, n, sp, _nlb_lag(name), states)
    elif name == "dmfc_rsg":
        states = _condition_states(model, rng, 4)
        make = lambda n, sp: _dmfc_session(model, rng, n, sp, states)
    else:  # pragma: no cover - the registry has exactly these
        raise SyntheticError(f"no synthetic generator for {name}")
    trainval = make(n_train + n_val, trval_split)
    test = make(n_test, test_split)
    realise(model, rng, info, (trainval, test), realism)  # rates, variability, behaviour noise
    return model, rng, trainval, test


def _nlb_lag(name: str) -> int:
    """nlb_tools' decoding lag for a dataset (ms), so behaviour is decodable where NLB looks."""
    from nlb_tools.make_tensors import PARAMS

    return int(PARAMS[name].get("lag", 0) or 0)


# --------------------------------------------------------------------------------------------
# Spikes and NWB files
# --------------------------------------------------------------------------------------------
def _spike_times(model: _Model, rng, latents: np.ndarray, chunk: int = 50000) -> list[np.ndarray]:
    """Poisson spikes at 1 ms from the model's rates, as sorted spike times (s) per neuron."""
    per_unit: list[list[np.ndarray]] = [[] for _ in range(model.n_neurons)]
    for start in range(0, latents.shape[0], chunk):
        rates = np.exp(model.log_rates(latents[start : start + chunk].astype(np.float64)))
        counts = rng.poisson(np.minimum(rates, 0.5))
        t_idx, unit = np.nonzero(counts)
        reps = counts[t_idx, unit]
        t_idx = np.repeat(t_idx, reps)
        unit = np.repeat(unit, reps)
        times = (start + t_idx + rng.uniform(0.05, 0.95, t_idx.size)) / 1000.0
        order = np.lexsort((times, unit))
        times, unit = times[order], unit[order]
        bounds = np.searchsorted(unit, np.arange(model.n_neurons + 1))
        for n in range(model.n_neurons):
            per_unit[n].append(times[bounds[n] : bounds[n + 1]])
    return [np.concatenate(p) for p in per_unit]


def _truth_1ms(model: _Model, latents: np.ndarray) -> np.ndarray:
    return np.minimum(np.exp(model.log_rates(latents.astype(np.float64))), 0.5).astype(np.float32)


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
