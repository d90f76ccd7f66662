"""The Ray Tune experiment: many NDT trainings chosen by Bayesian optimisation, resumable.

Experiment folder (``<results_dir>/<dataset_key>/<name>/``, docs/architecture.md)::

    search_setup.json          what was searched: base run config, search space, metric, seed
    tuner.pkl, experiment_state-*.json, searcher-state-*.pkl, search_gen_state-*.json   (Ray Tune's)
    trial_<trial_id>/          Tune's trial folder: params.json, result.json, checkpoint_*/ ...
        run/                   the nlbpipe.ndt.train run directory: config.yaml, status.json,
                               progress.csv, last/, checkpoints/{best_masked_loss,...}/
    checkpoints.csv            every kept checkpoint scored on val (nlbpipe.ranking)
    search_progress.png

Trials write their run directory straight into the experiment folder, so on a multi-node cluster
the storage path must be a filesystem every node mounts at the same path (NFS, a shared disk).

Why the pieces are as they are:

* A finished trial is never trained twice: ``train`` returns at once for a run directory whose
  ``status.json`` is final, so a trial that Tune restores as unfinished after a hard kill (its
  end fell between two experiment snapshots) costs a second, not a retraining.
* A diverged run is a *finished* trial whose objective is NaN (told to the searcher as a failure),
  not an exception: retrying a divergence only diverges again. Exceptions (out of memory, a lost
  node) are retried ``max_failures`` times from the last checkpoint, then recorded as errored.
* ``--resume`` uses the stored setup (``search_setup.json``), not the config file as it is now, so
  an edit made mid-search cannot make the two halves of a search train different models.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import contracts
from .config import ConfigError, RunConfig, apply_overrides, config_from_dict, load_config
from .contracts import SEARCH_SETUP_JSON
from .datasets import resolve
from .errors import NlbpipeError
from .fileio import write_json_atomic
from .search_space import SearchSpace, load_search_space, search_space_path, space_from_dict

log = logging.getLogger(__name__)

METRIC_MODES = {"val_co_bps": "max", "val_masked_loss": "min", "val_unmasked_loss": "min"}
SCHEDULERS = ("fifo", "asha")
SETUP_FILE = SEARCH_SETUP_JSON


class SearchError(NlbpipeError, RuntimeError):
    """A search that cannot start or resume; the message says which flag, file or folder is at fault."""


@dataclass
class SearchOptions:
    dataset_key: str
    config_path: Path
    results_dir: Path
    samples: int = 100
    seed: int = 42
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


def trial_dirname(trial) -> str:
    """Tune's default folder names embed every hyperparameter; the trial id is enough and stable."""
    return contracts.trial_dirname(trial.trial_id)


def run_dir_of(experiment_dir: Path, trial_id: str) -> Path:
    return contracts.trial_run_dir(experiment_dir, trial_id)


# ----------------------------------------------------------------------------------- the trial

def _plain(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
    return out


def _restore_last(run_dir: Path, checkpoint) -> None:
    """Rebuild ``run_dir/last`` from Tune's checkpoint when the trial moved to a node that lacks it."""
    last = run_dir / contracts.LAST_DIR
    if checkpoint is None or (last / "state.pt").is_file():
        return
    tmp = run_dir / ".last.restoring"
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.to_directory(str(tmp))
    shutil.rmtree(last, ignore_errors=True)
    os.replace(tmp, last)


def run_trial(params: dict, *, base_config: dict, experiment_dir: str, metric: str,
              checkpoint_every_s: float = 300.0) -> None:
    """One Tune trial: the base run config + this trial's hyperparameters → ``nlbpipe.ndt.train.train``."""
    from ray import tune

    from .ndt.train import train

    cfg = apply_overrides(config_from_dict(base_config, SETUP_FILE), params, "search space")
    trial_id = tune.get_context().get_trial_id()
    run_dir = run_dir_of(Path(experiment_dir), trial_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    _restore_last(run_dir, tune.get_checkpoint())
    last_checkpoint = [float("-inf")]

    def report(metrics: dict, checkpoint_dir: Path | None) -> None:
        # Copying last/ to Tune's checkpoint at every validation would write gigabytes per trial; the
        # run directory on shared storage is the primary resume state, Tune's copy a throttled backup.
        checkpoint = None
        now = time.monotonic()
        if checkpoint_dir is not None and now - last_checkpoint[0] >= checkpoint_every_s:
            checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir))
            last_checkpoint[0] = now
        tune.report(_plain({**metrics, "trial_status": contracts.RUNNING}), checkpoint=checkpoint)

    result = train(cfg, run_dir, report=report)
    objective = result.best.get(metric, math.nan) if result.status != contracts.DIVERGED else math.nan
    final = {k: v for k, v in result.best.items() if not k.startswith("step")}
    final.update({"step": result.step, metric: objective, "trial_status": result.status,
                  "n_checkpoints": len(result.checkpoints)})
    tune.report(_plain(final))


# ----------------------------------------------------------------------------------- setup

def _base_config(opts: SearchOptions) -> tuple[RunConfig, SearchSpace]:
    if not Path(opts.config_path).is_file():
        raise SearchError(f"no run config at {opts.config_path}: run `python generate_configs.py "
                          f"{opts.dataset_key}` first, or pass --config")
    cfg = load_config(opts.config_path, opts.overrides)
    if cfg.data.dataset != opts.dataset_key:
        raise ConfigError("data.dataset", str(opts.config_path),
                          f"is {cfg.data.dataset!r} but the search is for {opts.dataset_key!r}")
    space_path = search_space_path(opts.config_path)
    space = load_search_space(space_path)
    overridden = {o.split("=", 1)[0].strip() for o in opts.overrides}
    clash = sorted(overridden & set(space.keys))
    if clash:
        raise SearchError(f"--set {clash[0]} fixes a searched hyperparameter ({space_path}); "
                          "remove it from the search space or drop the --set")
    for end in (0, -1):  # values the run config refuses fail here, not in trial 1 an hour later
        apply_overrides(cfg, space.point_to_config([_extreme(d, end) for d in space.dimensions]), str(space_path))
    return cfg, space


def _extreme(dim, end: int) -> Any:
    """The lowest (end=0) or highest (end=-1) value a dimension can take."""
    if dim.sample_fn == "choice":
        return dim.opts[end]
    if dim.sample_fn == "randint":
        return int(dim.low) if end == 0 else int(dim.high) - 1
    return dim.low if end == 0 else dim.high


def _write_setup(opts: SearchOptions, cfg: RunConfig, space: SearchSpace) -> dict:
    setup = {
        "dataset_key": opts.dataset_key,
        "config_path": str(opts.config_path),
        "overrides": list(opts.overrides),
        "base_config": cfg.to_dict(),
        "search_space": space.to_dict(),
        "metric": opts.metric,
        "mode": opts.mode,
        "samples": opts.samples,
        "seed": opts.seed,
        "scheduler": opts.scheduler,
        "n_initial_points": opts.n_initial_points,
        "acq_func": opts.acq_func,
    }
    write_json_atomic(opts.experiment_dir / SETUP_FILE, setup)
    return setup


def read_setup(experiment_dir: Path) -> dict:
    path = Path(experiment_dir) / SETUP_FILE
    if not path.is_file():
        raise SearchError(f"{experiment_dir} is not an nlbpipe search experiment (no {SETUP_FILE})")
    return json.loads(path.read_text())


def init_ray(address: str | None, num_cpus: int | None, verbose: int) -> None:
    """Start (or join) Ray quietly. Token auth (Ray >= 2.59 for local clusters) needs nothing here:
    a local ``ray.init`` creates ``~/.ray/auth_token``; joining a cluster reads RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH or that file, and fails with Ray's message if none matches the head's."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Tune warns when a trial's first checkpoints come in quick succession; harmless here, and noise
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    kwargs: dict[str, Any] = dict(log_to_driver=verbose >= 2, configure_logging=True,
                                  logging_level=logging.WARNING if verbose < 2 else logging.INFO)
    if address:
        try:
            ray.init(address=address, **kwargs)
        except Exception as err:  # ConnectionError, AuthenticationError, ... all mean the same to a user
            raise SearchError(
                f"cannot join the Ray cluster at --address {address}: {err}. Is `ray start --head` running "
                "there, and (with token authentication) is RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH set to "
                "the head's token (`ray get-auth-token` on the head)?") from None
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)


def _default_gpus(opts: SearchOptions) -> float:
    import ray

    if opts.gpus_per_trial is not None:
        return float(opts.gpus_per_trial)
    return 0.5 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _scheduler(opts: SearchOptions, cfg: RunConfig):
    if opts.scheduler == "fifo":
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()
    from ray.tune.schedulers import ASHAScheduler

    max_t = cfg.train.max_updates
    grace = max(cfg.train.val_interval, max_t // 8)
    return ASHAScheduler(time_attr="step", max_t=max_t, grace_period=min(grace, max_t), reduction_factor=3)


def _trainable(setup: dict, experiment_dir: Path, gpus: float, cpus: float, checkpoint_every_s: float):
    from ray import tune

    fn = tune.with_parameters(run_trial, base_config=setup["base_config"], experiment_dir=str(experiment_dir),
                              metric=setup["metric"], checkpoint_every_s=checkpoint_every_s)
    return tune.with_resources(fn, {"cpu": cpus, "gpu": gpus})


def run_search(opts: SearchOptions):
    """Run (or resume) the search and rank its checkpoints; returns Tune's ``ResultGrid``."""
    from ray import tune

    from .searcher import SkoptSearcher

    if opts.metric not in METRIC_MODES:
        raise SearchError(f"--metric {opts.metric!r} is not one of {', '.join(METRIC_MODES)}")
    if opts.scheduler not in SCHEDULERS:
        raise SearchError(f"--scheduler {opts.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    if opts.samples < 1:
        raise SearchError(f"--samples must be >= 1, got {opts.samples}")
    resolve(opts.dataset_key)
    exp_dir = opts.experiment_dir

    if opts.resume:
        setup = read_setup(exp_dir)
        if opts.overrides:
            raise SearchError("--set cannot change a search being resumed (it resumes with its stored config)")
        if not tune.Tuner.can_restore(str(exp_dir)):
            raise SearchError(f"nothing to resume in {exp_dir} (no Tune experiment state)")
    else:
        if (exp_dir / SETUP_FILE).exists() or (exp_dir / "tuner.pkl").exists():
            raise SearchError(f"experiment {exp_dir} already exists: add --resume to continue it, "
                              "or --name to start another")
        cfg, space = _base_config(opts)
        exp_dir.mkdir(parents=True, exist_ok=True)
        setup = _write_setup(opts, cfg, space)

    init_ray(opts.address, opts.num_cpus, opts.verbose)
    cfg = config_from_dict(setup["base_config"], str(exp_dir / SETUP_FILE))
    gpus = _default_gpus(opts)
    if gpus > 0 and cfg.train.device == "cpu":
        log.warning("train.device is cpu but %s GPU per trial is reserved", gpus)
    trainable = _trainable(setup, exp_dir, gpus, opts.cpus_per_trial, opts.checkpoint_every_s)
    print(f"experiment folder: {exp_dir}  ({'resuming' if opts.resume else 'new'}; "
          f"{setup['samples']} trials, {opts.cpus_per_trial} CPU + {gpus} GPU each)", flush=True)

    if opts.resume:
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        space = space_from_dict(setup["search_space"], str(exp_dir / SETUP_FILE))
        # metric and mode go to the searcher itself: Tune only forwards TuneConfig's to a searcher
        # when a param_space is given, and here the searcher owns the whole space.
        searcher = SkoptSearcher(space, setup["metric"], setup["mode"], n_initial_points=opts.n_initial_points,
                                 acq_func=opts.acq_func, seed=opts.seed)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=setup["metric"], mode=setup["mode"], search_alg=searcher,
                scheduler=_scheduler(opts, cfg), num_samples=setup["samples"],
                max_concurrent_trials=opts.max_concurrent, trial_dirname_creator=trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=opts.experiment_name, storage_path=str(opts.storage_path),
                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=opts.verbose,
            ),
        )
    results = tuner.fit()
    return results


def summarize(results) -> dict:
    """Counts of trial outcomes, for the last line a user reads ("running": stopped by the scheduler
    or by an interruption before the run ended)."""
    counts: dict[str, int] = {}
    for r in results:
        status = "errored" if r.error else (r.metrics or {}).get("trial_status", "not started")
        counts[status] = counts.get(status, 0) + 1
    return counts

