"""Ensembles of checkpoints by validation co-bps: the 2021 winners' top-N mean, and greedy selection.

Why the arithmetic looks unusual: the 2021 winners ranked checkpoints by val co-bps and averaged the
rates of the top N for N = 1..M, keeping the best N. Done naively that is M full passes over M
rate tensors. Here each checkpoint's val prediction is reduced once to the statistics co-bps
actually needs: the Poisson log-likelihood only reads ``log(rate)`` where a spike occurred, and
``sum(rate)`` elsewhere. So a checkpoint becomes its held-out rates at the (few) bins with spikes,
plus its summed rate per val trial. Any weighted mean of checkpoints is then scored exactly
(nlb_tools' formula, gammaln terms cancelling between model and null) from those statistics: the
whole top-N curve is one cumulative sum, a greedy step scores every candidate in one matrix
operation, and cross-validation over val trials is a change of index set.

Greedy selection (Caruana et al. 2004, "Ensemble selection from libraries of models"): start from
the top few checkpoints, then repeatedly add (with replacement) the checkpoint that most raises the
ensemble's val co-bps; weights are the pick counts. It fits the val set more closely than top-N,
so on a small val set (mc_maze_small has 25 val trials) its in-sample figure flatters it. The guard
chosen here is K-fold cross-validation over val *trials*: greedy runs on K-1 folds and the path is
scored on the held-out fold; the number of picks is the one with the best mean held-out co-bps,
and that held-out figure (not the in-sample one) is what is compared with top-N, whose whole
procedure (pick N by argmax, score) is cross-validated on the same folds. With ``method="both"``
the submission uses the method with the higher cross-validated co-bps; ties go to top-N.

Ensemble rates are a weighted mean of member rates, accumulated in float64 one tensor at a time
in member order (:func:`weighted_mean_rates`), so the test rates written here and the ones
``validate_submission.py --recompute`` rebuilds from re-inferred member rates are the same sum.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import h5py
import numpy as np
import pandas as pd

from .fileio import atomic_path, write_json_atomic
from .rates import RATE_KEYS, save_rates

CSV_NAME = "checkpoints.csv"
ENSEMBLE_JSON = "ensemble.json"
CURVE_PNG = "ensemble_curve.png"
RATES_VAL = "rates_val.h5"
RATES_TEST = "rates_test.h5"
METHODS = ("topn", "greedy", "both")
_MIN_RATE = 1e-9  # nlb_tools replaces zero rates by this before taking the log


class EnsembleError(ValueError):
    """An experiment folder, checkpoint or option that an ensemble cannot be built from."""


def submission_filename(dataset_key: str) -> str:
    return f"{dataset_key}_submission.h5"


# --------------------------------------------------------------------------------------------
# The library: checkpoints.csv rows whose rates files exist


@dataclass
class Checkpoint:
    """One row of checkpoints.csv: a kept checkpoint of one trial."""

    trial_id: str
    kind: str
    checkpoint_dir: str  # relative to the experiment folder, as written in the csv
    path: Path  # absolute
    val_co_bps: float  # as ranked in the csv
    csv_metrics: dict = field(default_factory=dict)

    @property
    def rates_val(self) -> Path:
        return self.path / RATES_VAL

    @property
    def rates_test(self) -> Path:
        return self.path / RATES_TEST

    def describe(self) -> str:
        return f"{self.trial_id}/{self.kind} ({self.checkpoint_dir})"


def read_checkpoints_csv(experiment_dir: str | os.PathLike) -> list[Checkpoint]:
    """All rows of ``<experiment>/checkpoints.csv``, best val co-bps first (NaN scores dropped)."""
    experiment_dir = Path(experiment_dir)
    csv = experiment_dir / CSV_NAME
    if not csv.is_file():
        raise EnsembleError(f"{csv} not found: is {experiment_dir} an experiment folder (run_hyperopt.py output)?")
    try:
        table = pd.read_csv(csv, dtype={"trial_id": str, "kind": str, "checkpoint_dir": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise EnsembleError(f"{csv} is not a readable csv: {err}") from err
    missing = [c for c in ("trial_id", "kind", "checkpoint_dir", "val_co_bps") if c not in table.columns]
    if missing:
        raise EnsembleError(f"{csv} lacks column(s) {', '.join(missing)}; found {', '.join(map(str, table.columns))}")
    table["val_co_bps"] = pd.to_numeric(table["val_co_bps"], errors="coerce")
    table = table[np.isfinite(table["val_co_bps"])].sort_values("val_co_bps", ascending=False, kind="stable")
    metric_cols = [c for c in table.columns if c.startswith("val_")]
    rows = []
    for row in table.to_dict("records"):
        rel = str(row["checkpoint_dir"])
        rows.append(
            Checkpoint(
                trial_id=str(row["trial_id"]),
                kind=str(row["kind"]),
                checkpoint_dir=rel,
                path=(experiment_dir / rel).absolute(),
                val_co_bps=float(row["val_co_bps"]),
                csv_metrics={c: _plain(row[c]) for c in metric_cols if c in row},
            )
        )
    if not rows:
        raise EnsembleError(f"{csv} has no checkpoint with a finite val_co_bps")
    return rows


def _plain(value):
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def with_rates(checkpoints: Iterable[Checkpoint], log=None) -> list[Checkpoint]:
    """Keep checkpoints that have both rates files (a run still going has neither yet)."""
    kept, skipped = [], []
    for ckpt in checkpoints:
        (kept if ckpt.rates_val.is_file() and ckpt.rates_test.is_file() else skipped).append(ckpt)
    if skipped and log:
        names = ", ".join(c.describe() for c in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        log(f"skipping {len(skipped)} checkpoint(s) without {RATES_VAL}/{RATES_TEST}: {names}")
    return kept


def find_experiment(dataset_key: str, experiment: str | None, results_dir: str | os.PathLike) -> Path:
    """``--experiment PATH|NAME``, or the dataset's only / most recently ranked experiment."""
    if experiment:
        path = Path(experiment)
        if path.is_dir():
            return path.absolute()
        candidate = Path(results_dir) / dataset_key / experiment
        if candidate.is_dir():
            return candidate.absolute()
        raise EnsembleError(f"--experiment {experiment}: neither a folder nor an experiment under {Path(results_dir) / dataset_key}")
    root = Path(results_dir) / dataset_key
    found = sorted(root.glob(f"*/{CSV_NAME}"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not found:
        raise EnsembleError(f"no experiment with a {CSV_NAME} under {root}; run run_hyperopt.py {dataset_key} or pass --experiment")
    return found[-1].parent.absolute()


# --------------------------------------------------------------------------------------------
# co-bps from sufficient statistics


def _read(path: Path, key: str) -> np.ndarray:
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise EnsembleError(f"{path} lacks {key}")
            return f[key][()]
    except OSError as err:
        raise EnsembleError(f"{path} is not a readable HDF5 rates file: {err}") from err


class HeldoutScorer:
    """Val co-bps of any weighted mean of checkpoints, from per-checkpoint statistics.

    Holds, for the held-out val spikes ``[trials, bins, neurons]``: the spike counts where a spike
    occurred (``s``), the trial of each, and per trial subset the null model's part of the
    likelihood (nlb_tools' per-neuron mean over that subset). Checkpoints added with :meth:`add`
    contribute their rates at those bins (``R[k]``) and their summed rate per trial
    (``tot[k, trial]``). Agreement with :func:`nlbpipe.scoring.co_bps` is a test.
    """

    def __init__(self, spikes_heldout: np.ndarray):
        spikes = np.asarray(spikes_heldout, dtype=np.float64)
        if spikes.ndim != 3:
            raise EnsembleError(f"held-out val spikes must be [trials, bins, neurons], got shape {spikes.shape}")
        self.shape = spikes.shape
        self._valid = ~np.isnan(spikes)
        hit = self._valid & (np.nan_to_num(spikes) > 0)
        self._hit = hit
        self.s = spikes[hit]
        self.trial_of = np.nonzero(hit)[0]
        self.n_trials = spikes.shape[0]
        self.R: list[np.ndarray] = []
        self.tot: list[np.ndarray] = []
        # per trial and neuron: spike count and valid bins, and sum of s*log(s!) terms cancel (gammaln)
        self._spk_tn = np.nansum(spikes, axis=1)
        self._valid_tn = self._valid.sum(axis=1).astype(np.float64)

    def __len__(self) -> int:
        return len(self.R)

    def add(self, rates_heldout: np.ndarray, name: str = "rates") -> None:
        rates = np.asarray(rates_heldout)
        if rates.shape != self.shape:
            raise EnsembleError(f"{name}: eval_rates_heldout has shape {rates.shape}, the val held-out spikes {self.shape}")
        if not np.all(np.isfinite(rates[self._valid])) or np.any(rates[self._valid] < 0):
            raise EnsembleError(f"{name}: eval_rates_heldout holds NaN, inf or negative rates")
        self.R.append(rates[self._hit].astype(np.float64))
        self.tot.append(np.where(self._valid, rates, 0).sum(axis=(1, 2), dtype=np.float64))

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        return np.stack(self.R), np.stack(self.tot)

    def null_part(self, trials: np.ndarray | None = None) -> tuple[float, float]:
        """(null model NLL without the gammaln terms, spike count) over a trial subset.

        nlb_tools' null predicts each neuron's mean count over the scored (non-NaN) bins, zero
        means replaced by 1e-9; its NLL is sum_n V_n m_n - S_n log m_n with S_n spikes and V_n bins.
        """
        mask = np.ones(self.n_trials, bool) if trials is None else np.asarray(trials, bool)
        S = self._spk_tn[mask].sum(axis=0)
        V = self._valid_tn[mask].sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.where(V > 0, S / np.where(V > 0, V, 1), 0.0)
        m = np.where(m == 0, _MIN_RATE, m)
        return float(np.sum(V * m - S * np.log(m))), float(S.sum())

    def co_bps(self, weights: np.ndarray, trials: np.ndarray | None = None) -> float:
        """co-bps of ``sum_k weights[k] * rates_k`` (weights need not sum to one)."""
        R, tot = self.matrices()
        w = np.asarray(weights, dtype=np.float64)
        mix = w @ R
        mix = np.where(mix == 0, _MIN_RATE, mix)
        if trials is None:
            ll = self.s @ np.log(mix) - (w @ tot).sum()
        else:
            mask = np.asarray(trials, bool)
            sel = mask[self.trial_of]
            ll = self.s[sel] @ np.log(mix[sel]) - (w @ tot[:, mask]).sum()
        null, nsp = self.null_part(trials)
        return _bits(null, ll, nsp)


def _bits(null_nll: float, loglik, n_spikes: float):
    """(NLL_null - NLL_model) / spikes / ln 2, with NLL_model = -loglik (gammaln cancelled)."""
    if n_spikes <= 0:
        return np.full(np.shape(loglik), np.nan) if np.ndim(loglik) else float("nan")
    return (null_nll + np.asarray(loglik)) / n_spikes / math.log(2)


def log_rates(R: np.ndarray) -> np.ndarray:
    return np.log(np.where(R == 0, _MIN_RATE, R))


class _Subset:
    """The statistics restricted to a set of val trials, in float32 for the candidate search."""

    def __init__(self, scorer: HeldoutScorer, R: np.ndarray, tot: np.ndarray, trials: np.ndarray | None,
                 logR: np.ndarray | None = None):
        mask = np.ones(scorer.n_trials, bool) if trials is None else np.asarray(trials, bool)
        sel = mask[scorer.trial_of]
        self.s = scorer.s[sel]
        self.R = R[:, sel]
        self._logR = None if logR is None else logR[:, sel]
        self.tot = tot[:, mask].sum(axis=1)
        self.null, self.nsp = scorer.null_part(mask)

    def score_counts(self, counts: np.ndarray) -> float:
        """Exact (float64) co-bps of the pick-count-weighted mean."""
        n = counts.sum()
        mix = (counts @ self.R) / n
        mix = np.where(mix == 0, _MIN_RATE, mix)
        return float(_bits(self.null, self.s @ np.log(mix) - (counts @ self.tot) / n, self.nsp))

    def topn_curve(self, order_len: int) -> np.ndarray:
        """co-bps of the mean of the first N rows, N = 1..order_len."""
        out = np.empty(order_len)
        csum = np.zeros(self.R.shape[1])
        ctot = 0.0
        for n in range(1, order_len + 1):
            csum += self.R[n - 1]
            ctot += self.tot[n - 1]
            mix = csum / n
            mix = np.where(mix == 0, _MIN_RATE, mix)
            out[n - 1] = _bits(self.null, self.s @ np.log(mix) - ctot / n, self.nsp)
        return out

    def greedy_path(self, n_init: int, max_size: int, batch: int | None = 8) -> list[int]:
        """Caruana forward selection with replacement; returns the pick sequence (init included).

        Each step picks the k maximising sum(s * log(C + R_k)) - tot_k / n, where C is the summed
        rates of the picks so far: naively a log per spike bin per candidate. Instead, with m = C/n'
        the current mean (n' picks) and x_k = (R_k - m) / (n m) > -1, log(C + R_k) = log(n m) +
        log1p(x_k), and the series x - x^2/2 + x^3/3 is an upper bound of log1p(x) for every
        x > -1 (the remainder is -x^4/4(1+xi)^4). Three matrix-vector products give that bound
        for all candidates; candidates are then scored exactly in order of their bound, ``batch``
        at a time, until the best exact score beats every remaining bound. The pick is therefore
        the exact argmax, found with a few exact evaluations (``batch=None``: all, exactly).
        """
        K = self.R.shape[0]
        singles = self.topn_single()
        init = list(np.argsort(-singles, kind="stable")[: min(n_init, K)])
        picks = list(init)
        csum = self.R[init].sum(axis=0)
        bounded = batch is not None and batch < K
        if bounded:
            R2 = self.R * self.R
            R3 = R2 * self.R
            S0 = float(self.s.sum())
        while len(picks) < max_size:
            n_cur = len(picks)
            n = n_cur + 1
            m = np.maximum(csum / n_cur, _MIN_RATE)
            u = 1.0 / (n * m)
            c = 1.0 / n

            def exact(idx):
                x = self.R[idx] * u - c
                np.log1p(x, out=x)
                return x @ self.s - self.tot[idx] / n

            if not bounded:
                best = int(np.argmax(exact(np.arange(K))))
            else:
                su = self.s * u
                y1 = self.R @ su
                y2 = R2 @ (su * u)
                y3 = R3 @ (su * u * u)
                sx1 = y1 - c * S0
                sx2 = y2 - 2 * c * y1 + c * c * S0
                sx3 = y3 - 3 * c * y2 + 3 * c * c * y1 - c ** 3 * S0
                bound = sx1 - sx2 / 2 + sx3 / 3 - self.tot / n
                order = np.argsort(-bound, kind="stable")
                best, best_ll = -1, -np.inf
                for start in range(0, K, batch):
                    idx = order[start: start + batch]
                    ll = exact(idx)
                    j = int(np.argmax(ll))
                    if ll[j] > best_ll:
                        best, best_ll = int(idx[j]), float(ll[j])
                    nxt = start + batch
                    if nxt >= K or best_ll >= bound[order[nxt]] - 1e-9 * abs(bound[order[nxt]]):
                        break
            picks.append(best)
            csum += self.R[best]
        return picks

    def topn_single(self) -> np.ndarray:
        if self._logR is None:
            self._logR = log_rates(self.R)
        return _bits(self.null, self._logR @ self.s - self.tot, self.nsp)

    def path_scores(self, picks: Sequence[int], n_init: int) -> np.ndarray:
        """Exact co-bps after each pick from the initial ensemble on (index 0 = init)."""
        K = self.R.shape[0]
        counts = np.zeros(K)
        out = []
        for i, p in enumerate(picks):
            counts[p] += 1
            if i + 1 >= min(n_init, len(picks)):
                out.append(self.score_counts(counts))
        return np.array(out)


# --------------------------------------------------------------------------------------------
# Selection


@dataclass
class Selection:
    """Which checkpoints, with which weights, and how well they did on val."""

    method: str
    indices: list[int]  # into the library, distinct, in first-pick order
    weights: list[float]  # sum to 1
    counts: list[int]
    val_co_bps: float  # in-sample, all val trials
    cv_co_bps: float  # cross-validated over val trials (nan without folds)
    size: int  # N for top-N; number of picks for greedy


@dataclass
class EnsembleResult:
    library: list[Checkpoint]
    single_co_bps: np.ndarray  # each library checkpoint alone, on val (recomputed from its rates)
    curve: np.ndarray  # top-N val co-bps, N = 1..M
    topn: Selection
    greedy: Selection | None
    greedy_path: np.ndarray | None  # in-sample val co-bps after each greedy pick (from n_init picks)
    greedy_cv_path: np.ndarray | None
    n_init: int
    chosen: Selection
    folds: int
    seed: int

    @property
    def members(self) -> list[tuple[Checkpoint, float, int]]:
        return [(self.library[i], w, c) for i, w, c in zip(self.chosen.indices, self.chosen.weights, self.chosen.counts)]


def _counts_to_selection(method: str, picks: Sequence[int], K: int, val: float, cv: float) -> Selection:
    counts = np.bincount(np.asarray(picks, int), minlength=K)
    order = list(dict.fromkeys(int(p) for p in picks))
    total = counts.sum()
    return Selection(method, order, [counts[i] / total for i in order], [int(counts[i]) for i in order], val, cv, len(picks))


def fold_masks(n_trials: int, folds: int, seed: int) -> list[np.ndarray]:
    """Held-out trial masks of a shuffled K-fold split of the val trials."""
    if folds < 2:
        return []
    if folds > n_trials:
        raise EnsembleError(f"--folds {folds} is more than the {n_trials} val trials")
    perm = np.random.default_rng(seed).permutation(n_trials)
    masks = []
    for part in np.array_split(perm, folds):
        m = np.zeros(n_trials, bool)
        m[part] = True
        masks.append(m)
    return masks


def select(
    scorer: HeldoutScorer,
    method: str = "both",
    size: int | str = "auto",
    greedy_max_size: int = 30,
    n_init: int = 3,
    folds: int = 5,
    seed: int = 0,
) -> tuple[Selection, Selection | None, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Top-N (and greedy) selections over the scorer's library, in library (= rank) order.

    Returns (topn, greedy or None, curve, single scores, greedy in-sample path, greedy CV path).
    """
    if method not in METHODS:
        raise EnsembleError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    R, tot = scorer.matrices()
    K = R.shape[0]
    if K == 0:
        raise EnsembleError("no checkpoint to ensemble")
    logR = log_rates(R)  # once: every fold's single-model scores index into it
    full = _Subset(scorer, R, tot, None, logR)
    curve = full.topn_curve(K)
    singles = full.topn_single()
    if size == "auto":
        n_top = int(np.nanargmax(curve)) + 1
    else:
        n_top = int(size)
        if not 1 <= n_top <= K:
            raise EnsembleError(f"--size {n_top}: the library holds {K} checkpoint(s) with rates (1..{K})")
    if n_init < 1 or greedy_max_size < 1:
        raise EnsembleError(f"--greedy-init {n_init} / --greedy-max-size {greedy_max_size}: both must be >= 1")
    if folds < 0 or folds == 1:
        raise EnsembleError(f"--folds {folds}: expected 0 (no cross-validation) or at least 2")
    masks = fold_masks(scorer.n_trials, folds, seed)
    run_greedy = method in ("greedy", "both")
    n_init = min(n_init, K)  # a library smaller than K: greedy starts from all of it
    max_size = max(greedy_max_size, n_init)

    def fold(held):
        """One fold: top-N procedure and greedy path fitted on the other folds, scored on this one."""
        train, test = _Subset(scorer, R, tot, ~held, logR), _Subset(scorer, R, tot, held, logR)
        n = int(np.nanargmax(train.topn_curve(K))) + 1 if size == "auto" else n_top
        top_score = test.score_counts(np.r_[np.ones(n), np.zeros(K - n)])
        g_path = test.path_scores(train.greedy_path(n_init, max_size), n_init) if run_greedy else None
        return top_score, g_path

    # Folds are independent and numpy releases the GIL in its kernels: one thread per core, one
    # BLAS thread each (the matrix-vector products are too small to gain from more).
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        with ThreadPoolExecutor(max_workers=max(1, min(len(masks) + 1, os.cpu_count() or 1))) as pool:
            full_picks = pool.submit(full.greedy_path, n_init, max_size) if run_greedy else None
            per_fold = list(pool.map(fold, masks))
            picks = full_picks.result() if full_picks is not None else None
    topn = _counts_to_selection("topn", list(range(n_top)), K, float(curve[n_top - 1]), _nanmean([f[0] for f in per_fold]))

    greedy = path = cv_path = None
    if run_greedy:
        path = full.path_scores(picks, n_init)
        if masks:
            cv_path = np.nanmean(np.stack([f[1] for f in per_fold]), axis=0)
            best = int(np.nanargmax(cv_path))
        else:
            best = int(np.nanargmax(path))
        n_picks = n_init + best
        greedy = _counts_to_selection(
            "greedy", picks[:n_picks], K, float(path[best]), float(cv_path[best]) if cv_path is not None else float("nan")
        )
    return topn, greedy, curve, singles, path, cv_path


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if values.size and np.isfinite(values).any() else float("nan")


def choose(method: str, topn: Selection, greedy: Selection | None) -> Selection:
    """The selection the submission uses: the asked method, or with "both" the better CV figure."""
    if method == "topn" or greedy is None:
        return topn
    if method == "greedy":
        return greedy
    if np.isfinite(greedy.cv_co_bps) and np.isfinite(topn.cv_co_bps):
        return greedy if greedy.cv_co_bps > topn.cv_co_bps else topn
    return topn


# --------------------------------------------------------------------------------------------
# Rates of an ensemble


def weighted_mean_rates(
    sources: Sequence, weights: Sequence[float], read: Callable[[object, str], np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Σ w_k rates_k per tensor (w_k·rates_k in float32, summed in float64 in member order), as float32.

    ``sources`` are rates files (read one tensor at a time, so memory holds one member's tensor
    plus the sum) or in-memory rate dicts.
    """
    if len(sources) != len(weights) or not sources:
        raise EnsembleError(f"{len(sources)} member(s) but {len(weights)} weight(s)")
    read = read or _read_source
    out = {}
    for key in RATE_KEYS:
        acc = None
        for src, w in zip(sources, weights):
            x = read(src, key)
            if isinstance(src, dict) or not (isinstance(x, np.ndarray) and x.dtype == np.float32):
                x = np.array(x, dtype=np.float32)  # never scale the caller's arrays in place
            if acc is None:
                acc = np.zeros(x.shape, np.float64)
            elif x.shape != acc.shape:
                raise EnsembleError(f"{_name(src)}: {key} has shape {x.shape}, other members {acc.shape}")
            x *= np.float32(w)
            acc += x
        out[key] = acc.astype(np.float32)
    return out


def _read_source(src, key: str) -> np.ndarray:
    if isinstance(src, dict):
        if key not in src:
            raise EnsembleError(f"member rates lack {key}")
        return src[key]
    return _read(Path(src), key)


def _name(src) -> str:
    return str(src) if not isinstance(src, dict) else "member rates"


# --------------------------------------------------------------------------------------------
# Building from an experiment folder


def build_library(
    experiment_dir: Path, spikes_heldout: np.ndarray, max_models: int = 50, log=None
) -> tuple[list[Checkpoint], HeldoutScorer]:
    """The top ``max_models`` checkpoints with rates, each reduced to its co-bps statistics."""
    if max_models < 1:
        raise EnsembleError(f"--max-models {max_models}: must be at least 1")
    library = with_rates(read_checkpoints_csv(experiment_dir), log=log)[:max_models]
    if not library:
        raise EnsembleError(f"no checkpoint in {experiment_dir / CSV_NAME} has {RATES_VAL} and {RATES_TEST} yet")
    scorer = HeldoutScorer(spikes_heldout)
    for i, ckpt in enumerate(library):
        scorer.add(_read(ckpt.rates_val, "eval_rates_heldout"), name=str(ckpt.rates_val))
        if log and ((i + 1) % 10 == 0 or i + 1 == len(library)):
            log(f"read val rates of {i + 1}/{len(library)} checkpoints")
    return library, scorer


def build_ensemble(
    experiment_dir: str | os.PathLike,
    spikes_heldout: np.ndarray,
    method: str = "both",
    size: int | str = "auto",
    max_models: int = 50,
    greedy_max_size: int = 30,
    n_init: int = 3,
    folds: int = 5,
    seed: int = 0,
    log=None,
) -> EnsembleResult:
    """Rank, score and select; no files are written (see :func:`write_ensemble`)."""
    experiment_dir = Path(experiment_dir).absolute()
    library, scorer = build_library(experiment_dir, spikes_heldout, max_models, log)
    topn, greedy, curve, singles, path, cv_path = select(
        scorer, method, size, greedy_max_size=greedy_max_size, n_init=n_init, folds=folds, seed=seed
    )
    if log:
        for ckpt, score in zip(library, singles):
            if abs(score - ckpt.val_co_bps) > 1e-3:
                log(f"warning: {ckpt.describe()} scores {score:.4f} val co-bps from its {RATES_VAL}, "
                    f"checkpoints.csv says {ckpt.val_co_bps:.4f} (stale rates file?)")
    return EnsembleResult(
        library=library, single_co_bps=singles, curve=curve, topn=topn, greedy=greedy, greedy_path=path,
        greedy_cv_path=cv_path, n_init=min(n_init, len(library)), chosen=choose(method, topn, greedy),
        folds=folds if folds >= 2 else 0, seed=seed,
    )


def ensemble_rates(result: EnsembleResult, phase: str) -> dict[str, np.ndarray]:
    files = [(c.rates_val if phase == "val" else c.rates_test) for c, _, _ in result.members]
    return weighted_mean_rates(files, [w for _, w, _ in result.members])


def _selection_json(sel: Selection | None, library: list[Checkpoint]) -> dict | None:
    if sel is None:
        return None
    return {
        "method": sel.method, "size": sel.size, "val_co_bps": sel.val_co_bps, "cv_co_bps": _none_nan(sel.cv_co_bps),
        "members": [{"trial_id": library[i].trial_id, "kind": library[i].kind, "weight": w, "count": c}
                    for i, w, c in zip(sel.indices, sel.weights, sel.counts)],
    }


def _none_nan(x):
    return None if x is None or not np.isfinite(x) else float(x)


def write_ensemble(
    result: EnsembleResult,
    experiment_dir: Path,
    dataset_key: str,
    out_dir: str | os.PathLike,
    targets: dict | None = None,
) -> tuple[dict[str, Path], dict[str, dict]]:
    """Write rates_val.h5, the submission, the curve plot and ensemble.json (last, atomically).

    ensemble.json is removed first and written last: its presence means every file it names is
    complete and from this run. With val
    ``targets`` (nlb_tools eval-target dict) the ensemble and the best single checkpoint are scored
    on every val metric; returns (paths, {"ensemble": metrics, "best_single": metrics}).
    """
    from .submission import write_submission

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "rates_val": out_dir / RATES_VAL,
        "submission": out_dir / submission_filename(dataset_key),
        "curve_png": out_dir / CURVE_PNG,
        "ensemble_json": out_dir / ENSEMBLE_JSON,
    }
    val_rates = ensemble_rates(result, "val")
    metrics: dict[str, dict] = {}
    if targets is not None:
        from .rates import load_rates
        from .scoring import evaluate_rates

        best = result.library[int(np.nanargmax(result.single_co_bps))]
        metrics["best_single"] = evaluate_rates(dataset_key, load_rates(best.rates_val), targets)
        metrics["ensemble"] = evaluate_rates(dataset_key, val_rates, targets)
    # A reader must never pair this run's files with an earlier run's ensemble.json: it goes first,
    # and comes back (atomically) only after everything it names is written.
    paths["ensemble_json"].unlink(missing_ok=True)
    save_rates(paths["rates_val"], val_rates, dataset=dataset_key, phase="val", method=result.chosen.method)
    write_submission(paths["submission"], dataset_key, ensemble_rates(result, "test"))
    plot_curve(result, paths["curve_png"], dataset_key)
    write_json_atomic(paths["ensemble_json"], ensemble_record(result, experiment_dir, dataset_key, paths, metrics))
    return paths, metrics


def ensemble_record(result: EnsembleResult, experiment_dir: Path, dataset_key: str, paths: dict, val_metrics) -> dict:
    lib = result.library
    best = int(np.nanargmax(result.single_co_bps))
    return {
        "dataset": dataset_key,
        "experiment_dir": str(Path(experiment_dir).absolute()),
        "method": result.chosen.method,
        "size": result.chosen.size,
        "n_members": len(result.chosen.indices),
        "members": [
            {
                "rank": i + 1, "trial_id": c.trial_id, "kind": c.kind, "checkpoint_dir": c.checkpoint_dir,
                "checkpoint_path": str(c.path), "weight": w, "count": n,
                "val_co_bps": float(result.single_co_bps[i]), "csv_metrics": c.csv_metrics,
            }
            for i, w, n in zip(result.chosen.indices, result.chosen.weights, result.chosen.counts)
            for c in [lib[i]]
        ],
        "ensemble": {
            "val_co_bps": result.chosen.val_co_bps, "cv_co_bps": _none_nan(result.chosen.cv_co_bps),
            "val_metrics": (val_metrics or {}).get("ensemble", {}),
        },
        "best_single": {"trial_id": lib[best].trial_id, "kind": lib[best].kind,
                        "checkpoint_dir": lib[best].checkpoint_dir, "val_co_bps": float(result.single_co_bps[best]),
                        "val_metrics": (val_metrics or {}).get("best_single", {})},
        "topn": _selection_json(result.topn, lib),
        "greedy": _selection_json(result.greedy, lib),
        "curve": {
            "n": list(range(1, len(result.curve) + 1)),
            "val_co_bps": [float(x) for x in result.curve],
            "library": [{"trial_id": c.trial_id, "kind": c.kind, "checkpoint_dir": c.checkpoint_dir,
                         "val_co_bps": float(s)} for c, s in zip(lib, result.single_co_bps)],
        },
        "greedy_path": None if result.greedy_path is None else {
            "size": list(range(result.n_init, result.n_init + len(result.greedy_path))),
            "val_co_bps": [float(x) for x in result.greedy_path],
            "cv_co_bps": None if result.greedy_cv_path is None else [float(x) for x in result.greedy_cv_path],
        },
        "cv": {"folds": result.folds, "seed": result.seed, "over": "val trials"},
        "files": {k: str(v) for k, v in paths.items() if k != "ensemble_json"},
    }


def plot_curve(result: EnsembleResult, path: Path, dataset_key: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    n = np.arange(1, len(result.curve) + 1)
    ax.plot(n, result.curve, "o-", ms=3, label="top-N mean")
    ax.axvline(result.topn.size, color="C0", ls=":", lw=1)
    if result.greedy_path is not None:
        g = np.arange(result.n_init, result.n_init + len(result.greedy_path))
        ax.plot(g, result.greedy_path, "s-", ms=3, color="C1", label="greedy (in-sample)")
        if result.greedy_cv_path is not None:
            ax.plot(g, result.greedy_cv_path, "--", color="C1", alpha=0.6, label="greedy (CV over val trials)")
        ax.axvline(result.greedy.size, color="C1", ls=":", lw=1)
    ax.axhline(np.nanmax(result.single_co_bps), color="gray", ls="--", lw=1, label="best single checkpoint")
    ax.set_xlabel("ensemble size (checkpoints, or greedy picks)")
    ax.set_ylabel("val co-bps")
    ax.set_title(f"{dataset_key}: ensemble val co-bps (chosen: {result.chosen.method}, {result.chosen.size})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def summary_lines(result: EnsembleResult) -> list[str]:
    """The top-N and greedy figures side by side, for the terminal."""
    best = float(np.nanmax(result.single_co_bps))
    rows = [("best single", "1", f"{best:.4f}", "")]
    for sel in (result.topn, result.greedy):
        if sel is not None:
            cv = f"{sel.cv_co_bps:.4f}" if np.isfinite(sel.cv_co_bps) else "-"
            label = "top-N" if sel.method == "topn" else "greedy"
            size = f"{sel.size}" if sel.method == "topn" else f"{sel.size} picks / {len(sel.indices)} ckpts"
            rows.append((label + (" *" if sel is result.chosen else ""), size, f"{sel.val_co_bps:.4f}", cv))
    head = ("method", "size", "val co-bps", f"CV co-bps ({result.folds}-fold)" if result.folds else "CV co-bps")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*head)] + [fmt.format(*r) for r in rows] + ["(* used for the submission)"]


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Val targets


def read_targets_file(path: str | os.PathLike, dataset_key: str) -> dict:
    """An nlb_tools eval-target ``.h5`` (``{dataset_key: {eval_spikes_heldout, ...}}``) as a dict."""
    from nlb_tools.make_tensors import h5_to_dict

    path = Path(path)
    if not path.is_file():
        raise EnsembleError(f"--targets {path}: file not found")
    try:
        with h5py.File(path, "r") as f:
            targets = h5_to_dict(f)
    except OSError as err:
        raise EnsembleError(f"--targets {path}: not a readable HDF5 file: {err}") from err
    if dataset_key not in targets or "eval_spikes_heldout" not in targets[dataset_key]:
        raise EnsembleError(f"--targets {path}: no {dataset_key}/eval_spikes_heldout; groups: {', '.join(targets) or 'none'}")
    return targets


def data_dirs(experiment_dir: Path, library: Sequence[Checkpoint] | None = None) -> tuple[str, str]:
    """(raw_dir, cache_dir) the experiment trained on: its best checkpoint's config.yaml, else settings."""
    import yaml

    rows = library if library is not None else with_rates(read_checkpoints_csv(experiment_dir))
    for ckpt in rows[:1]:
        cfg_path = ckpt.path / "config.yaml"
        if cfg_path.is_file():
            data = (yaml.safe_load(cfg_path.read_text()) or {}).get("data", {})
            if data.get("raw_dir"):
                return str(data["raw_dir"]), str(data.get("cache_dir") or "")
    from .settings import get_settings

    s = get_settings()
    return str(s.data_raw), str(s.cache_dir)


def val_targets(dataset_key: str, experiment_dir: Path, targets_file=None) -> dict:
    """The val-phase eval targets: ``--targets FILE`` or nlbpipe.tensors from the experiment's data."""
    if targets_file:
        return read_targets_file(targets_file, dataset_key)
    raw_dir, cache_dir = data_dirs(experiment_dir)
    from .tensors import load_eval_targets

    targets = load_eval_targets(dataset_key, "val", raw_dir, cache_dir)
    if dataset_key not in targets:
        targets = {dataset_key: targets}
    return targets
