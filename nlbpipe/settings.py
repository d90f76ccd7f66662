"""Where nlbpipe reads and writes, from environment variables (compatible with the 2021 pipeline).

Read once per process by :func:`get_settings`; tests that change the environment call
``get_settings.cache_clear()``.

=======================  ==========================  ==========================================
variable                 default                     holds
=======================  ==========================  ==========================================
``NLB_HOME``             ``~/nlb_2021``              everything below, unless overridden
``NLB_DATA_RAW``         ``$NLB_HOME/raw``           DANDI downloads: ``<dandiset>/sub-*/*.nwb``
``NLB_SYNTHETIC_RAW``    ``$NLB_HOME/synthetic``     synthetic stand-ins, same layout (never mixed
                                                     with real downloads)
``NLB_CACHE_DIR``        ``$NLB_HOME/processed``     cached nlb_tools tensors (``.h5``)
``CONFIG_DIR``           ``$NLB_HOME/configs``       generated run configs and search spaces
``RAY_TUNE_HOME``        ``$NLB_HOME/ray_results``   Ray Tune experiments, one folder per dataset key
``NLB_SUBMISSIONS_DIR``  ``$NLB_HOME/submissions``   EvalAI submission files
=======================  ==========================  ==========================================

``~`` is expanded and every path made absolute; no directory is created here.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    data_raw: Path
    synthetic_raw: Path
    cache_dir: Path
    config_dir: Path
    results_dir: Path
    submissions_dir: Path


def _path(value: str) -> Path:
    return Path(os.path.expanduser(value)).absolute()


@functools.lru_cache(maxsize=None)
def get_settings() -> Settings:
    """The paths of this process, from the environment at first call."""
    env = os.environ
    home = _path(env.get("NLB_HOME") or "~/nlb_2021")

    def var(name: str, default: str) -> Path:
        value = env.get(name)
        return _path(value) if value else home / default

    return Settings(
        home=home,
        data_raw=var("NLB_DATA_RAW", "raw"),
        synthetic_raw=var("NLB_SYNTHETIC_RAW", "synthetic"),
        cache_dir=var("NLB_CACHE_DIR", "processed"),
        config_dir=var("CONFIG_DIR", "configs"),
        results_dir=var("RAY_TUNE_HOME", "ray_results"),
        submissions_dir=var("NLB_SUBMISSIONS_DIR", "submissions"),
    )
