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
from typing import Sequence

import numpy as np

from ..errors import EnsembleError

_MIN_RATE = 1e-9  # nlb_tools replaces zero rates by this before taking the log



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
        log_mix = log_rates(w @ R)
        if trials is None:
            ll = self.s @ log_mix - (w @ tot).sum()
        else:
            mask = np.asarray(trials, bool)
            sel = mask[self.trial_of]
            ll = self.s[sel] @ log_mix[sel] - (w @ tot[:, mask]).sum()
        null, nsp = self.null_part(trials)
        return _bits(null, ll, nsp)


def _bits(null_nll: float, loglik, n_spikes: float):
    """(NLL_null - NLL_model) / spikes / ln 2, with NLL_model = -loglik (gammaln cancelled)."""
    if n_spikes <= 0:
        return np.full(np.shape(loglik), np.nan) if np.ndim(loglik) else float("nan")
    return (null_nll + np.asarray(loglik)) / n_spikes / math.log(2)


def log_rates(R: np.ndarray) -> np.ndarray:
    """log of rates as nlb_tools takes it: zero rates count as 1e-9 (the one place this is done)."""
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
        return float(_bits(self.null, self.s @ log_rates(mix) - (counts @ self.tot) / n, self.nsp))

    def topn_curve(self, order_len: int) -> np.ndarray:
        """co-bps of the mean of the first N rows, N = 1..order_len."""
        out = np.empty(order_len)
        csum = np.zeros(self.R.shape[1])
        ctot = 0.0
        for n in range(1, order_len + 1):
            csum += self.R[n - 1]
            ctot += self.tot[n - 1]
            mix = csum / n
            out[n - 1] = _bits(self.null, self.s @ log_rates(mix) - ctot / n, self.nsp)
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
