"""EvalAI submission files for NLB'21: write, merge, check, recompute, score.

A submission is an ``.h5`` with one group per dataset key (``mc_maze``, ``mc_maze_20``, ...)
holding the six test-phase rate tensors (``nlbpipe.rates.RATE_KEYS``), float32 expected counts per
bin. EvalAI's scorer (``nlb_tools.evaluation.evaluate``) silently skips a group it does not know and
reads tensors by name, so a wrong group name or a missing tensor does not fail loudly there: it
scores nothing, or crashes on the server. :func:`check_submission` is the loud local version.

Expected shapes come from the local test-phase tensors when the data is present (the truth for
this copy of the data), else from the registry (trial counts, neurons) and nlb_tools' ``PARAMS``
(alignment window and forward-prediction length divided by the bin size).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import h5py
import numpy as np

from .contracts import CHECKPOINTS_CSV, ENSEMBLE_JSON, EVALAI_GROUPS
from .errors import EnsembleError, NlbpipeError
from .fileio import atomic_path
from .rates import RATE_KEYS, save_rates

if TYPE_CHECKING:  # a runtime import would be circular: nlbpipe.ensemble writes submissions
    from .ensemble.smoothing import RateSmoothing


class SubmissionError(NlbpipeError, ValueError):
    """A submission file, or an option about one, that cannot be used; the message names it."""


def submission_group(dataset_key: str) -> str:
    """The group EvalAI reads for a dataset key (the key itself, if EvalAI knows it)."""
    if dataset_key not in EVALAI_GROUPS:
        raise SubmissionError(f"{dataset_key!r} is not an EvalAI submission group; valid: {', '.join(EVALAI_GROUPS)}")
    return dataset_key


# --------------------------------------------------------------------------------------------
# Write / read / merge


def write_submission(path: str | os.PathLike, dataset_key: str, rates: dict) -> Path:
    """One group named for the dataset key, the six tensors as float32, written atomically."""
    group = submission_group(dataset_key)
    missing = [k for k in RATE_KEYS if k not in rates]
    if missing:
        raise SubmissionError(f"rates for {dataset_key} lack {', '.join(missing)}")
    return save_rates(path, rates, group=group)


def read_submission(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """``{group: {tensor: array}}`` for every group in the file."""
    path = Path(path)
    f = _open(path)
    with f:
        return {g: {k: f[g][k][()] for k in f[g] if isinstance(f[g][k], h5py.Dataset)}
                for g in f if isinstance(f[g], h5py.Group)}


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise SubmissionError(f"submission file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise SubmissionError(f"{path} is not a readable HDF5 file: {err}") from err


def merge_submissions(out: str | os.PathLike, files: Sequence[str | os.PathLike]) -> dict[str, Path]:
    """Copy every group of ``files`` into one upload file; a group in two files is an error.

    (nlb_tools' ``save_to_h5`` skips keys that already exist, which would silently keep whichever
    copy came first.) Returns ``{group: source file}``.
    """
    if not files:
        raise SubmissionError("--merge needs an output path and at least one submission file")
    out = Path(out)
    sources: dict[str, Path] = {}
    for file in map(Path, files):
        if file.absolute() == out.absolute():
            raise SubmissionError(f"--merge: output {out} is also an input")
        with _open(file) as f:
            groups = [g for g in f if isinstance(f[g], h5py.Group)]
            if not groups:
                raise SubmissionError(f"{file} holds no dataset group")
            for g in groups:
                if g not in EVALAI_GROUPS:
                    raise SubmissionError(f"{file}: group {g!r} is not an EvalAI submission group")
                if g in sources:
                    raise SubmissionError(f"group {g!r} is in both {sources[g]} and {file}; merge one submission per dataset key")
                sources[g] = file
        for g in groups:  # NaN, integer or missing tensors must not reach an upload
            problems = check_submission(file, g, None, allow_other_groups=True)
            if problems:
                more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
                raise SubmissionError(f"--merge: {file}: {problems[0]}{more}; run validate_submission.py {g} {file}")
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as dst:
            for g, file in sources.items():
                with h5py.File(file, "r") as src:
                    src.copy(src[g], dst, name=g)
    return sources


# --------------------------------------------------------------------------------------------
# Expected shapes


@dataclass(frozen=True)
class ExpectedShapes:
    shapes: dict[str, tuple[int, ...]]
    source: str  # where they came from, for the report


def shapes_from_tensors(tensors: dict) -> dict[str, tuple[int, ...]]:
    """Rate shapes implied by nlb_tools test-phase input tensors (eval held-out neurons are hidden:
    their count is the train held-out count; forward bins come from the train forward tensors)."""
    need = ["train_spikes_heldin", "train_spikes_heldout", "eval_spikes_heldin"]
    missing = [k for k in need if k not in tensors]
    if missing:
        raise SubmissionError(f"test-phase tensors lack {', '.join(missing)}")
    n_tr, n_bins, n_in = np.shape(tensors["train_spikes_heldin"])
    n_out = np.shape(tensors["train_spikes_heldout"])[-1]
    n_ev = np.shape(tensors["eval_spikes_heldin"])[0]
    fw = tensors.get("train_spikes_heldin_forward")
    if fw is None:
        raise SubmissionError("test-phase tensors lack train_spikes_heldin_forward (forward-prediction bins)")
    n_fw = np.shape(fw)[1]
    return _shapes(n_tr, n_ev, n_bins, n_fw, n_in, n_out)


def _shapes(n_tr, n_ev, n_bins, n_fw, n_in, n_out) -> dict[str, tuple[int, ...]]:
    return {
        "train_rates_heldin": (n_tr, n_bins, n_in),
        "train_rates_heldout": (n_tr, n_bins, n_out),
        "eval_rates_heldin": (n_ev, n_bins, n_in),
        "eval_rates_heldout": (n_ev, n_bins, n_out),
        "eval_rates_heldin_forward": (n_ev, n_fw, n_in),
        "eval_rates_heldout_forward": (n_ev, n_fw, n_out),
    }


def shapes_from_registry(dataset_key: str) -> dict[str, tuple[int, ...]]:
    """Shapes from the registry's trial/neuron counts and nlb_tools PARAMS' windows.

    Test phase: the train split is the train+val trials, eval is the test trials; bins are the
    alignment window (dmfc_rsg: its 1500 ms eval segment) over the bin size; forward bins are
    ``fp_len`` (200 ms) over the bin size: 40 at 5 ms, 10 at 20 ms.
    """
    from nlb_tools.make_tensors import PARAMS

    from .datasets import UnknownDatasetError, resolve

    try:
        info, bin_ms = resolve(dataset_key)
    except UnknownDatasetError as err:
        raise SubmissionError(str(err)) from err
    params = PARAMS[info.name]
    lo, hi = params["make_params"]["align_range"]
    n_bins = int(round((hi - lo) / bin_ms))
    n_fw = int(round(params["fp_len"] / bin_ms))
    return _shapes(info.n_train + info.n_val, info.n_test, n_bins, n_fw, info.n_heldin, info.n_heldout)


def expected_shapes(dataset_key: str, raw_dir=None, cache_dir=None, use_local: bool = True) -> ExpectedShapes:
    """From the local test-phase tensors when that data is present, else from the registry."""
    submission_group(dataset_key)
    if use_local and raw_dir is not None:
        from .datasets import resolve

        info, _ = resolve(dataset_key)
        if info.test_path(raw_dir).is_file() and info.train_path(raw_dir).is_file():
            from .tensors import load_tensors

            tensors = load_tensors(dataset_key, "test", raw_dir, cache_dir)
            return ExpectedShapes(shapes_from_tensors(tensors), f"local test-phase tensors under {raw_dir}")
    return ExpectedShapes(shapes_from_registry(dataset_key), "the dataset registry and nlb_tools PARAMS")


# --------------------------------------------------------------------------------------------
# Format check


def check_submission(path: str | os.PathLike, dataset_key: str, expected: dict[str, tuple[int, ...]] | None,
                     allow_other_groups: bool = False) -> list[str]:
    """Every problem EvalAI (or the benchmark) would have with the file, one line each; [] = fine.

    ``expected=None`` skips the shape check (the merge of files already checked one by one);
    another dataset's group is a problem unless ``allow_other_groups`` (a merged upload)."""
    path = Path(path)
    group = submission_group(dataset_key)
    try:
        f = _open(path)
    except SubmissionError as err:
        return [str(err)]
    problems = []
    with f:
        if group not in f or not isinstance(f[group], h5py.Group):
            found = ", ".join(sorted(f.keys())) or "nothing"
            return [f"{path}: group {group!r} missing: expected a group {group!r} holding the six rate tensors; found {found}"]
        g = f[group]
        for key in RATE_KEYS:
            where = f"{group}/{key}"
            if key not in g:
                shape = f" of shape {expected[key]}" if expected is not None else ""
                problems.append(f"{where}: missing: expected a float32 dataset{shape}")
                continue
            ds = g[key]
            if not isinstance(ds, h5py.Dataset):
                problems.append(f"{where}: expected a dataset, found a group")
                continue
            if not np.issubdtype(ds.dtype, np.floating):
                problems.append(f"{where}: dtype: expected float (float32), found {ds.dtype}")
                continue
            if ds.dtype != np.float32:  # the contract: float16 loses rates, float64 doubles the upload
                problems.append(f"{where}: dtype: expected float32, found {ds.dtype}")
            if expected is not None and tuple(ds.shape) != tuple(expected[key]):
                problems.append(f"{where}: shape: expected {tuple(expected[key])}, found {tuple(ds.shape)}")
            x = ds[()]
            n_bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            if n_bad:
                problems.append(f"{where}: values: expected finite rates, found {n_bad} NaN/inf value(s)")
            n_neg = int(np.count_nonzero(x < 0))
            if n_neg:
                problems.append(f"{where}: values: expected non-negative rates, found {n_neg} negative (min {np.nanmin(x):.4g})")
        extra = sorted(set(g.keys()) - set(RATE_KEYS))
        if extra:
            problems.append(f"{group}: unexpected entries {', '.join(extra)}: EvalAI reads only the six rate tensors")
        others = sorted(k for k in f.keys() if k != group)
        if others and not allow_other_groups:  # EvalAI scores every group it knows: unchecked ones too
            problems.append(f"{path}: unexpected group(s) {', '.join(others)} beside {group!r}: this check covers "
                            f"{group} only; check each dataset's own file, then combine them with build_ensemble.py --merge")
    return problems


# --------------------------------------------------------------------------------------------
# Recompute from checkpoints and compare


@dataclass
class TensorDiff:
    key: str
    max_abs: float
    max_rel: float
    ok: bool
    note: str = ""

    def line(self) -> str:
        status = "ok" if self.ok else "MISMATCH"
        extra = f"  {self.note}" if self.note else ""
        return f"{self.key:<28} max abs {self.max_abs:.3g}  max rel {self.max_rel:.3g}  {status}{extra}"


def compare_rates(reference: dict, candidate: dict, rtol: float = 1e-5, atol: float = 0.0) -> list[TensorDiff]:
    """Per tensor: max |a-b|, max |a-b|/|b| and whether ``|a-b| <= atol + rtol*|b|`` everywhere
    (numpy's assert_allclose rule, ``b`` = the recomputed reference)."""
    diffs = []
    for key in RATE_KEYS:
        if key not in reference or key not in candidate:
            which = "recomputed rates" if key not in reference else "submission"
            diffs.append(TensorDiff(key, float("nan"), float("nan"), False, f"missing in the {which}"))
            continue
        b = np.asarray(reference[key], dtype=np.float64)
        a = np.asarray(candidate[key], dtype=np.float64)
        if a.shape != b.shape:
            diffs.append(TensorDiff(key, float("nan"), float("nan"), False, f"shape {a.shape} vs recomputed {b.shape}"))
            continue
        d = np.abs(a - b)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(b != 0, d / np.abs(b), np.where(d == 0, 0.0, np.inf))
        ok = bool(np.all(d <= atol + rtol * np.abs(b)))
        diffs.append(TensorDiff(key, float(np.nanmax(d)) if d.size else 0.0, float(np.nanmax(rel)) if d.size else 0.0, ok))
    return diffs


@dataclass
class Member:
    checkpoint: Path
    weight: float
    label: str


def members_from_ensemble_json(path: str | os.PathLike) -> tuple[list[Member], dict]:
    """Members of an ensemble.json written by build_ensemble.py, with absolute checkpoint paths."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SubmissionError(f"{path} is not a readable ensemble.json: {err}") from err
    if not isinstance(record, dict) or not record.get("members"):
        raise SubmissionError(f"{path} names no ensemble members")
    exp = Path(record.get("experiment_dir", path.parent))
    members = []
    for m in record["members"]:
        try:
            candidates = [exp / m["checkpoint_dir"]] + ([Path(m["checkpoint_path"])] if m.get("checkpoint_path") else [])
            ckpt = next((c for c in candidates if c.is_dir()), candidates[0])
            members.append(Member(ckpt, float(m["weight"]), f"{m['trial_id']}/{m['kind']}"))
        except (KeyError, TypeError, ValueError) as err:
            raise SubmissionError(f"{path}: member entry {m!r} lacks {err}") from err
    return members, record


def members_from_experiment(experiment_dir: str | os.PathLike, size: int) -> list[Member]:
    """The top ``size`` checkpoints of checkpoints.csv with equal weights (the 2021 recipe)."""
    from .ranking import EnsembleError, read_checkpoints_csv

    try:
        rows = read_checkpoints_csv(experiment_dir)
    except EnsembleError as err:
        raise SubmissionError(str(err)) from err
    if not 1 <= size <= len(rows):
        raise SubmissionError(f"--size {size}: {Path(experiment_dir) / CHECKPOINTS_CSV} ranks {len(rows)} checkpoint(s)")
    return [Member(r.path, 1.0 / size, f"{r.trial_id}/{r.kind}") for r in rows[:size]]


@dataclass
class Ensemble:
    """What a submission is re-derived from: weighted members, then the recorded rate smoothing."""

    members: list[Member]
    smoothing: RateSmoothing


def _from_ensemble_json(path: Path) -> tuple[Ensemble, dict]:
    from .ensemble.smoothing import RateSmoothing

    members, record = members_from_ensemble_json(path)
    try:
        return Ensemble(members, RateSmoothing.from_json(record.get("smoothing"), where=str(path))), record
    except EnsembleError as err:
        raise SubmissionError(str(err)) from err


def resolve_ensemble(source: str | os.PathLike, submission_file: Path, size: int | None = None) -> Ensemble:
    """``--recompute`` argument → members and smoothing: an ensemble.json, a folder holding one, or an
    experiment folder (then the ensemble.json beside the submission if it names that experiment, else
    the unsmoothed top ``--size`` mean)."""
    from .ensemble.smoothing import NO_SMOOTHING

    source = Path(source)
    if source.is_file():
        return _from_ensemble_json(source)[0]
    if not source.is_dir():
        raise SubmissionError(f"--recompute {source}: no such file or folder")
    if (source / ENSEMBLE_JSON).is_file():
        return _from_ensemble_json(source / ENSEMBLE_JSON)[0]
    if not (source / CHECKPOINTS_CSV).is_file():
        raise SubmissionError(f"--recompute {source}: holds neither ensemble.json nor checkpoints.csv")
    if size is not None:
        return Ensemble(members_from_experiment(source, size), NO_SMOOTHING)
    beside = Path(submission_file).parent / ENSEMBLE_JSON
    if beside.is_file():
        found, record = _from_ensemble_json(beside)
        if Path(record.get("experiment_dir", "")).absolute() == source.absolute():
            return found
    raise SubmissionError(
        f"--recompute {source}: an experiment folder does not say which checkpoints were ensembled; "
        f"pass its ensemble.json, or --size N for the top-N mean"
    )


def infer_test_rates(checkpoint: Path, batch_size: int = 256) -> dict:
    """Test-phase rates of one checkpoint by inference (weights_only load, no pickles)."""
    from .ndt.inference import load_checkpoint, predict_rates
    from .tensors import load_tensors

    model, cfg = load_checkpoint(checkpoint)
    tensors = load_tensors(cfg.data.dataset, "test", cfg.data.raw_dir, cfg.data.cache_dir)
    return predict_rates(model, tensors, batch_size)


def recompute_rates(ensemble: Ensemble, predict: Callable[[Path], dict] | None = None, log=None) -> dict:
    """Weighted mean of the members' re-derived test rates, smoothed as recorded (as build_ensemble does)."""
    from .ensemble.smoothing import smooth_rates
    from .rates import weighted_mean_rates

    predict = predict or infer_test_rates
    members = ensemble.members
    outputs = []
    for i, m in enumerate(members):
        if not m.checkpoint.is_dir():
            raise SubmissionError(f"member {m.label}: checkpoint folder {m.checkpoint} not found")
        if log:
            log(f"re-deriving test rates of {m.label} ({i + 1}/{len(members)})")
        outputs.append(predict(m.checkpoint))
    return smooth_rates(weighted_mean_rates(outputs, [m.weight for m in members]), ensemble.smoothing.sd_bins)


# --------------------------------------------------------------------------------------------
# Score against eval targets


def score_submission(path: str | os.PathLike, targets_path: str | os.PathLike) -> list[tuple[str, dict[str, float]]]:
    """nlb_tools.evaluation.evaluate on the file, as EvalAI runs it: ``[(split, {metric: value})]``."""
    from .scoring import nlb_evaluate

    path, targets_path = Path(path), Path(targets_path)
    for p, what in ((path, "submission"), (targets_path, "targets")):
        if not p.is_file():
            raise SubmissionError(f"{what} file not found: {p}")
    with _open(targets_path) as t, _open(path) as s:
        common = sorted(set(t.keys()) & set(s.keys()))
        if not common:
            raise SubmissionError(f"{targets_path} holds targets for {', '.join(sorted(t.keys())) or 'nothing'}; "
                                  f"{path} holds {', '.join(sorted(s.keys())) or 'nothing'}: no dataset in common")
        for g in common:  # a submission given as the targets would score nothing and "pass"
            if not isinstance(t[g], h5py.Group) or "eval_spikes_heldout" not in t[g]:
                raise SubmissionError(f"--score {targets_path}: group {g!r} holds no eval_spikes_heldout: "
                                      "not an eval-targets file (nlb_tools format, e.g. eval_data_test.h5)")
    try:
        rows = nlb_evaluate(str(targets_path), str(path))
    except (KeyError, AssertionError, ValueError) as err:
        raise SubmissionError(f"nlb_tools.evaluation.evaluate failed on {path} with targets {targets_path}: {err!r}") from err
    if not rows:
        raise SubmissionError(f"--score {targets_path}: nlb_tools.evaluation.evaluate scored nothing in {path}")
    return rows

def metrics_table(rows: Sequence[tuple[str, dict[str, float]]]) -> list[str]:
    cols = ["co_bps", "vel_r2", "psth_r2", "fp_bps", "tp_corr"]
    cols = [c for c in cols if any(c in m for _, m in rows)]
    width = max([len("split")] + [len(n) for n, _ in rows])
    lines = [f"{'split':<{width}}  " + "  ".join(f"{c:>10}" for c in cols)]
    for name, m in rows:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{m[c]:>10.4f}" if c in m else f"{'-':>10}" for c in cols))
    return lines
