"""The benchmark's tensors and eval targets built window by window (memory follows the windows).

Each function here is the windowed twin of one nlb_tools function, with nlb_tools' own ``PARAMS``
(and its per-dataset lambdas: jitter, behaviour and decode masks) driving it:

* ``train_inputs``  <- ``make_train_input_tensors(..., include_forward_pred=True)``
* ``eval_inputs``   <- ``make_eval_input_tensors``
* ``eval_targets``  <- ``make_eval_target_tensors(..., include_psth=...)``

``build_windowed`` is what ``nlbpipe.tensors`` calls; tests hold every array equal to nlb_tools'.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .contracts import SCORED_KEY
from .psth import make_psth
from .recording import Recording, read_recording, stack_recordings
from .windows import behavior_windows, count_spikes, jagged, stack, trial_windows

SPK, HOSPK = "spikes", "heldout_spikes"  # PARAMS' spk_field / hospk_field for every dataset


def _params(name: str) -> dict:
    from nlb_tools.make_tensors import PARAMS

    return PARAMS[name]


def split_mask(trial_info: pd.DataFrame, split) -> np.ndarray:
    """``_prep_mask``: a split name or a list of them as a boolean trial mask."""
    splits = split if isinstance(split, list) else [split]
    return np.any([(trial_info.split == s).to_numpy() for s in splits], axis=0)


def jitter_ms(trial_info: pd.DataFrame, mask, jitter, bin_ms: int, seed: int = 0) -> np.ndarray:
    """``_prep_jitter`` with ``np.random.seed(seed)``: per trial, a jitter in ms on the bin grid."""
    rng = np.random.RandomState(seed)
    bounds = np.floor((jitter(trial_info[mask]) / bin_ms).round(4))
    vals = np.array([rng.random_sample() * (hi - lo) + lo for lo, hi in bounds]).round()
    return vals * bin_ms


def _with_jitter(rec: Recording, make_params: dict, columns: dict[str, pd.Series]):
    """A view of ``rec`` whose trial_info holds the jittered alignment column, and its make_params."""
    ti = rec.trial_info.copy()
    for col, values in columns.items():
        ti[col] = values
    col = next(iter(columns))
    params = dict(make_params)
    params["align_field" if "align_field" in params else "start_field"] = col
    return dataclasses.replace(rec, trial_info=ti), params


def forward_params(make_params: dict, fp_len: int, bin_ms: int) -> dict:
    """``_prep_fp``: ``fp_len`` ms after the end of the alignment window, overlap allowed."""
    align = make_params.get("align_field", make_params.get("end_field", "end_time"))
    start = make_params.get("align_range", (0, 0))[1]
    return {"align_field": align, "align_range": (start, start + fp_len / bin_ms * bin_ms),
            "allow_overlap": True}


def _stacked(rec, group, bin_ms, mask, params) -> np.ndarray:
    w = trial_windows(rec, bin_ms, mask, **params)
    return stack(count_spikes(rec, group, w), f"{rec.path.name} {group}")


def _jittered(rec, name, bin_ms, mask, make_params, seed=0):
    jitter = _params(name).get("jitter")
    if jitter is None:
        return rec, make_params
    align = make_params.get("align_field", make_params.get("start_field", "start_time"))
    vals = jitter_ms(rec.trial_info, mask, jitter, bin_ms, seed)
    col = rec.trial_info.loc[mask, align] + pd.to_timedelta(vals, unit="ms")
    return _with_jitter(rec, make_params, {align.replace("_time", "_jitter_time"): col})


def train_inputs(rec: Recording, name: str, bin_ms: int, mask) -> dict:
    """Held-in/held-out train spikes and their forward windows (float16, as nlb_tools returns them)."""
    p = _params(name)
    rec, mp = _jittered(rec, name, bin_ms, mask, dict(p["make_params"]))
    fp = forward_params(mp, p["fp_len"], bin_ms)
    return {
        "train_spikes_heldin": _stacked(rec, SPK, bin_ms, mask, mp),
        "train_spikes_heldout": _stacked(rec, HOSPK, bin_ms, mask, mp),
        "train_spikes_heldin_forward": _stacked(rec, SPK, bin_ms, mask, fp),
        "train_spikes_heldout_forward": _stacked(rec, HOSPK, bin_ms, mask, fp),
    }


def eval_inputs(rec: Recording, name: str, bin_ms: int, mask) -> dict:
    """Eval spikes: held-in, plus held-out when no test trial is among them."""
    p = _params(name)
    rec, mp = _jittered(rec, name, bin_ms, mask, dict(p["make_params"], allow_nans=True))
    out = {"eval_spikes_heldin": _stacked(rec, SPK, bin_ms, mask, mp)}
    if not np.any(rec.trial_info.split[mask] == "test"):
        out["eval_spikes_heldout"] = _stacked(rec, HOSPK, bin_ms, mask, mp)
    return out


def _jagged_behavior(rec, field, bin_ms, mask, params) -> np.ndarray:
    w = trial_windows(rec, bin_ms, mask, **params)
    per_row = dict(zip(w.rows, behavior_windows(rec, field, w)))
    rows = rec.trial_info.index[mask]
    return jagged([per_row[r] for r in rows], rec.signals[field].n_channels)


def _trial_behavior(ti: pd.DataFrame, mask, field) -> np.ndarray:
    return (ti[mask][field].apply(lambda x: x.dt.total_seconds() if hasattr(x, "dt") else x)
            .to_numpy().astype("float"))


def eval_targets(rec: Recording, name: str, bin_ms: int, train_mask, eval_mask, ignore_mask,
                 with_psth: bool, seed: int = 0) -> dict:
    """``make_eval_target_tensors``' inner dict (the one under the dataset key)."""
    p = _params(name)
    mp = dict(p["eval_make_params"])
    jitter = p.get("jitter")
    train_jit = eval_jit = None
    if jitter is not None:
        align = mp.get("align_field", mp.get("start_field", "start_time"))
        col = align.replace("_time", "_jitter_time")
        train_jit = jitter_ms(rec.trial_info, train_mask, jitter, bin_ms, seed)
        eval_jit = jitter_ms(rec.trial_info, eval_mask, jitter, bin_ms, seed)
        values = pd.Series(pd.NaT, index=rec.trial_info.index, dtype="timedelta64[ns]")
        ti = rec.trial_info
        values[train_mask] = ti.loc[train_mask, align] + pd.to_timedelta(train_jit, unit="ms")
        values[eval_mask] = ti.loc[eval_mask, align] + pd.to_timedelta(eval_jit, unit="ms")
        rec, mp = _with_jitter(rec, mp, {col: values})
    ti = rec.trial_info
    field = p["behavior_field"]
    if "align_range" not in mp:  # dmfc_rsg: set to go, front-padded to seg_len
        tp = p.get("eval_tensor_params", {})
        w = trial_windows(rec, bin_ms, eval_mask, **mp)
        per_row = dict(zip(w.rows, count_spikes(rec, HOSPK, w)))
        jit_bins = np.array([int(round(j / bin_ms)) for j in eval_jit])
        seg = int(round(tp["seg_len"] / bin_ms)) if tp.get("seg_len") else None
        heldout = jagged([per_row[r] for r in ti.index[eval_mask]], rec.groups[HOSPK].n_units,
                         jit_bins, tp.get("pad", "back"), seg)
    else:
        heldout = _stacked(rec, HOSPK, bin_ms, eval_mask, mp)
    if p["behavior_source"] == "trial_info":
        train_beh, eval_beh = _trial_behavior(ti, train_mask, field), _trial_behavior(ti, eval_mask, field)
    else:
        lag = p["lag"]
        bmp = dict(mp, allow_nans=True, align_range=tuple(t + lag for t in mp["align_range"]))
        train_beh = _jagged_behavior(rec, field, bin_ms, train_mask, bmp)
        eval_beh = _jagged_behavior(rec, field, bin_ms, eval_mask, bmp)
    if "behavior_mask" in p:
        train_beh[~p["behavior_mask"](ti[train_mask])] = np.nan
        eval_beh[~p["behavior_mask"](ti[eval_mask])] = np.nan
    fp = forward_params(mp, p["fp_len"], bin_ms)
    out = {
        "eval_spikes_heldout": heldout,
        "train_behavior": train_beh,
        "eval_behavior": eval_beh,
        "eval_spikes_heldin_forward": _stacked(rec, SPK, bin_ms, eval_mask, fp),
        "eval_spikes_heldout_forward": _stacked(rec, HOSPK, bin_ms, eval_mask, fp),
    }
    if "decode_masks" in p:
        out["train_decode_mask"] = p["decode_masks"](ti[train_mask])
        out["eval_decode_mask"] = p["decode_masks"](ti[eval_mask])
    if with_psth and "psth_params" in p:
        res = make_psth(rec, bin_ms, train_mask, eval_mask, ignore_mask, **p["psth_params"])
        out["eval_cond_idx"] = res.eval_cond_idx
        out["train_cond_idx"] = res.train_cond_idx
        out["psth"] = res.psth
        if jitter is not None:
            out["eval_jitter"] = (eval_jit / bin_ms).round().astype(int)
            out["train_jitter"] = (train_jit / bin_ms).round().astype(int)
    return out


def build_windowed(name: str, dataset_key: str, bin_ms: int, phase: str, paths: list,
                   with_psth: bool, val_keys, test_keys):
    """``(tensors, targets)`` as ``nlbpipe.tensors``' nlb_tools build returns them, from windows."""
    behavior = _params(name)["behavior_field"]
    behavior = behavior if isinstance(behavior, str) else None
    if phase == "val":
        rec = read_recording(paths[0], behavior_field=behavior)
        ti = rec.trial_info
        train_mask, eval_mask = split_mask(ti, "train"), split_mask(ti, "val")
        tensors = {**train_inputs(rec, name, bin_ms, train_mask), **eval_inputs(rec, name, bin_ms, eval_mask)}
        inner = eval_targets(rec, name, bin_ms, train_mask, eval_mask, ~(train_mask | eval_mask),
                             with_psth)
        targets = {dataset_key: inner}
        tensors["eval_spikes_heldin_forward"] = inner["eval_spikes_heldin_forward"]
        tensors["eval_spikes_heldout_forward"] = inner["eval_spikes_heldout_forward"]
        tensors[SCORED_KEY] = inner["eval_spikes_heldout"]  # what NLB scores co-bps on
        keys = val_keys
    else:  # nlb_tools stacks the files (in name order: test before train) into one recording
        rec = stack_recordings([read_recording(p) for p in sorted(paths, key=lambda p: p.name)])
        ti = rec.trial_info
        tensors = {**train_inputs(rec, name, bin_ms, split_mask(ti, ["train", "val"])),
                   **eval_inputs(rec, name, bin_ms, split_mask(ti, "test"))}
        targets, keys = None, test_keys
    tensors = {k: np.asarray(tensors[k], dtype=np.float32) for k in keys}
    return tensors, targets


__all__ = ["build_windowed", "train_inputs", "eval_inputs", "eval_targets", "split_mask", "jitter_ms",
           "forward_params"]
