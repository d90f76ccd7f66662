"""What a search is asked to do: ``SearchOptions`` (the fields ``run_hyperopt.py``'s flags fill in),
the metrics and schedulers it offers, its defaults, and ``SearchError``.

The search itself is ``nlbpipe.search``; what is checked before it writes anything,
``nlbpipe.search_checks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import NlbpipeError

METRIC_MODES = {"val_co_bps": "max", "val_masked_loss": "min", "val_unmasked_loss": "min"}
SCHEDULERS = ("fifo", "asha")
DEFAULT_SAMPLES, DEFAULT_SEED = 100, 42


class SearchError(NlbpipeError, RuntimeError):
    """A search that cannot start or resume; the message says which flag, file or folder is at fault."""


@dataclass
class SearchOptions:
    dataset_key: str
    config_path: Path
    results_dir: Path
    samples: int | None = None  # None: 100 for a new search, the stored number on --resume
    seed: int | None = None  # None: 42 for a new search, the stored seed on --resume
    name: str | None = None
    metric: str = "val_co_bps"
    scheduler: str = "fifo"
    gpus_per_trial: float | None = None  # None: 0.5 if the cluster has GPUs, else 0
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    overrides: list[str] = field(default_factory=list)
    resume: bool = False
    address: str | None = None
    num_cpus: int | None = None  # local cluster only
    n_initial_points: int = 10
    acq_func: str = "gp_hedge"
    max_failures: int = 2
    checkpoint_every_s: float = 300.0
    verbose: int = 1

    @property
    def mode(self) -> str:
        return METRIC_MODES[self.metric]

    @property
    def experiment_name(self) -> str:
        return self.name or f"{self.dataset_key}_hyperopt"

    @property
    def storage_path(self) -> Path:
        return Path(self.results_dir).absolute() / self.dataset_key

    @property
    def experiment_dir(self) -> Path:
        return self.storage_path / self.experiment_name
