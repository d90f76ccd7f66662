"""The scikit-optimize searcher: space mapping, concurrent suggestions, failures, state, and that it
beats random search on a toy objective (the reason to use it at all)."""

import json
import math

import numpy as np
import pytest

from nlbpipe.search_space import space_from_dict
from nlbpipe.searcher import SkoptSearcher

SPACE = {
    "model.dropout": {"sample_fn": "uniform", "low": 0.3, "high": 0.7},
    "train.lr": {"sample_fn": "loguniform", "low": 1e-5, "high": 5e-3},
    "train.mask_max_span": {"sample_fn": "randint", "low": 1, "high": 4},
    "model.activation": {"sample_fn": "choice", "opts": ["relu", "gelu"]},
}


def toy(cfg):
    """A smooth bowl with its top at dropout 0.45, lr 3e-4 (in log space), span 2, gelu."""
    return -((cfg["model.dropout"] - 0.45) / 0.4) ** 2 - ((math.log10(cfg["train.lr"]) + 3.5) / 2.7) ** 2 \
        - 0.1 * abs(cfg["train.mask_max_span"] - 2) - 0.1 * (cfg["model.activation"] != "gelu")


def make(seed=0, mode="max", n_init=4, **kw):
    return SkoptSearcher(space_from_dict(SPACE), metric="score", mode=mode, n_initial_points=n_init, seed=seed, **kw)


def test_suggestions_stay_inside_the_space_with_randint_high_excluded():
    s = make(n_init=3)
    seen_spans = set()
    for i in range(16):
        cfg = s.suggest(str(i))
        assert 0.3 <= cfg["model.dropout"] <= 0.7 and 1e-5 <= cfg["train.lr"] <= 5e-3
        assert isinstance(cfg["train.mask_max_span"], int) and cfg["model.activation"] in ("relu", "gelu")
        seen_spans.add(cfg["train.mask_max_span"])
        s.on_trial_complete(str(i), {"score": toy(cfg)})
    assert seen_spans <= {1, 2, 3}


def test_concurrent_suggestions_are_distinct_after_the_random_phase():
    s = make(n_init=2)
    for i in range(3):  # leave the random phase: the GP now drives every ask
        cfg = s.suggest(f"done{i}")
        s.on_trial_complete(f"done{i}", {"score": toy(cfg)})
    pending = [s.suggest(f"run{i}") for i in range(4)]  # four GPUs asking at once, nothing told yet
    keys = {tuple(sorted(c.items())) for c in pending}
    assert len(keys) == 4


def test_failed_trials_are_told_as_worse_than_every_success():
    s = make(n_init=3)
    for t in ("a", "b", "c", "d"):
        s.suggest(t)
    s.on_trial_complete("a", {"score": 0.2})
    s.on_trial_complete("b", {"score": 0.5})
    s.on_trial_complete("c", error=True)           # crashed / out of memory
    s.on_trial_complete("d", {"score": float("nan")})  # diverged
    hist = {t["trial_id"]: t for t in s.history}
    assert hist["c"]["status"] == hist["d"]["status"] == "failed"
    opt = s.optimizer()
    assert len(opt.yi) == 4
    ys = dict(zip(["a", "b", "c", "d"], opt.yi))
    assert ys["a"] == -0.2 and ys["b"] == -0.5  # mode max: skopt minimises the negative
    assert ys["c"] > ys["a"] and ys["d"] > ys["a"]  # failures rank below the worst success


def test_mode_min_tells_the_metric_as_is():
    s = make(mode="min")
    s.suggest("a")
    s.on_trial_complete("a", {"score": 0.3})
    assert s.optimizer().yi == [0.3]


def test_save_restore_keeps_the_model_and_the_running_trials(tmp_path):
    s = make(seed=3, n_init=3)
    for i in range(6):
        cfg = s.suggest(str(i))
        s.on_trial_complete(str(i), {"score": toy(cfg)})
    running = s.suggest("running")
    path = tmp_path / "searcher-state.pkl"  # Ray's file name; the content is JSON
    s.save(str(path))
    state = json.loads(path.read_text())
    assert len(state["told"]) == 6 and list(state["running"]) == ["running"]

    fresh = make(seed=99, n_init=50)
    fresh.restore(str(path))
    a, b = s.optimizer(), fresh.optimizer()
    assert a.Xi == b.Xi and a.yi == b.yi
    grid = a.space.rvs(n_samples=20, random_state=1)
    np.testing.assert_allclose(a.models[-1].predict(a.space.transform(grid)),
                               b.models[-1].predict(b.space.transform(grid)), rtol=1e-6, atol=1e-9)
    assert s.suggest("next") == fresh.suggest("next")  # same state, same next point
    fresh.on_trial_complete("running", {"score": toy(running)})  # a trial running at save completes after
    assert fresh.history[-1]["trial_id"] == "running" and fresh.history[-1]["y"] == pytest.approx(-toy(running))


def _search(searcher_or_none, seed, n=16, concurrent=2):
    rng = np.random.RandomState(seed)
    space = space_from_dict(SPACE)
    if searcher_or_none is None:  # random search: Tune's samplers
        best = -np.inf
        for _ in range(n):
            cfg = {d.key: d.to_python(d.skopt().rvs(random_state=rng)[0]) for d in space.dimensions}
            best = max(best, toy(cfg))
        return best
    s, best, running, i = searcher_or_none, -np.inf, [], 0
    while i < n or running:
        while len(running) < concurrent and i < n:
            running.append((str(i), s.suggest(str(i))))
            i += 1
        tid, cfg = running.pop(0)
        value = toy(cfg)
        best = max(best, value)
        s.on_trial_complete(tid, {"score": value})
    return best


def test_beats_random_search_on_a_toy_objective():
    seeds = range(4)
    bayes = [_search(make(seed=seed, n_init=5), seed) for seed in seeds]
    random = [_search(None, seed) for seed in seeds]
    assert np.mean(bayes) > np.mean(random)
    assert sum(b > r for b, r in zip(bayes, random)) >= 3
