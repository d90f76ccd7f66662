"""Shared fixtures: an isolated NLB_HOME for every test, and one small synthetic dataset per session."""

from __future__ import annotations

import os
from pathlib import Path

# OpenBLAS's spinning worker threads make small sklearn/scipy solves (nlb_tools' ridge decoders,
# the smoothing GLM) 10-20x slower on a busy 2-core machine; one BLAS thread is faster here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# `make test` runs the suite on several pytest-xdist workers: each gets its share of the cores for
# OpenMP (torch, scikit-learn), so that two workers' spinning threads do not oversubscribe the cores.
# Processes the tests start inherit it; training runs set their own thread counts.
os.environ.setdefault("OMP_NUM_THREADS",
                      str(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))

import pytest

from nlbpipe.settings import get_settings

PATH_VARS = {
    "NLB_DATA_RAW": "raw",
    "NLB_SYNTHETIC_RAW": "synthetic",
    "NLB_CACHE_DIR": "processed",
    "CONFIG_DIR": "configs",
    "RAY_TUNE_HOME": "ray_results",
    "NLB_SUBMISSIONS_DIR": "submissions",
}


@pytest.fixture(scope="session", autouse=True)
def _one_blas_thread():
    """The same limit for BLAS libraries loaded before this file set the variable."""
    import scipy.linalg  # noqa: F401  (load the BLAS builds first, so the limit reaches them)
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(autouse=True)
def nlb_home(tmp_path, monkeypatch):
    """Point NLB_HOME and every path variable at fresh temporary folders (no test touches ~)."""
    home = tmp_path / "nlb_home"
    monkeypatch.setenv("NLB_HOME", str(home))
    for var, sub in PATH_VARS.items():
        monkeypatch.setenv(var, str(home / sub))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


class SmallSynthetic(dict):
    """The session's synthetic stand-in; read as ``fx.raw_dir`` or ``fx["raw_dir"]``."""

    __getattr__ = dict.__getitem__


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory) -> SmallSynthetic:
    """Scaled-down synthetic mc_maze_small (seed 0) with hidden test targets and true rates.

    Shared by the whole session: treat ``raw_dir`` as read-only; ``cache_dir`` is a shared
    tensor cache (tests that rebuild caches on purpose use their own).
    """
    from nlbpipe.synthetic import write_synthetic

    base = tmp_path_factory.mktemp("small_synthetic")
    raw_dir, cache_dir = base / "synthetic", base / "cache"
    write_synthetic("mc_maze_small", raw_dir, seed=0, scale=0.2)
    return SmallSynthetic(raw_dir=Path(raw_dir), cache_dir=Path(cache_dir), dataset_key="mc_maze_small",
                          seed=0, scale=0.2)
