"""Top-N and greedy selection over a library of checkpoints, cross-validated over val trials.

See :mod:`nlbpipe.ensemble.statistics` for why scoring a candidate ensemble is cheap.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from ..errors import EnsembleError
from .statistics import HeldoutScorer, _Subset, log_rates

METHODS = ("topn", "greedy", "both")


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


class SelectionResult(NamedTuple):
    """What :func:`select` found, in library (= rank) order."""

    topn: Selection
    greedy: Selection | None
    curve: np.ndarray  # top-N val co-bps, N = 1..M
    singles: np.ndarray  # each checkpoint alone, val co-bps
    greedy_path: np.ndarray | None  # in-sample val co-bps after each greedy pick (from n_init picks)
    greedy_cv_path: np.ndarray | None  # the same, cross-validated over val trials


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
) -> SelectionResult:
    """Top-N (and greedy) selections over the scorer's library, in library (= rank) order."""
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
    return SelectionResult(topn, greedy, curve, singles, path, cv_path)


# the selection options and their defaults, stated once (select's signature); the CLI shows these
SELECT_DEFAULTS = {name: p.default for name, p in inspect.signature(select).parameters.items()
                   if p.default is not inspect.Parameter.empty}


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
