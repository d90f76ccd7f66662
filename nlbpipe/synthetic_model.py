"""The generative model behind the synthetic stand-ins: latent dynamics per NLB task, trials and
conditions, a nonlinear readout to per-neuron rates, behaviour, and Poisson spikes at 1 ms.

``synthetic`` writes what this simulates as NWB files; ``synthetic_rates`` decides how realistic
the rates are (``realism``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .datasets import DATASETS, DatasetInfo
from .synthetic_rates import DEFAULT_REALISM, realise

_PAD_MS = 1000  # recording continues this long after the last trial (forward windows, lags)

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
        raise ValueError(f"no synthetic generator for {name}")  # a registry entry without one: a bug
    trainval = make(n_train + n_val, trval_split)
    test = make(n_test, test_split)
    realise(model, rng, info, (trainval, test), realism)  # rates, variability, behaviour noise
    return model, rng, trainval, test


def _nlb_lag(name: str) -> int:
    """nlb_tools' decoding lag for a dataset (ms), so behaviour is decodable where NLB looks."""
    from nlb_tools.make_tensors import PARAMS

    return int(PARAMS[name].get("lag", 0) or 0)


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
