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
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import contracts
from .config import ConfigError, RunConfig, apply_overrides, config_from_dict, load_config
from .contracts import SEARCH_SETUP_JSON
from .contracts import TERMINAL_STATUSES as FINAL_STATUSES  # a run that has ended
from .datasets import resolve
from .errors import NlbpipeError
from .fileio import write_json_atomic
from .search_space import SearchSpace, load_search_space, search_space_path, space_from_dict

log = logging.getLogger(__name__)

METRIC_MODES = {"val_co_bps": "max", "val_masked_loss": "min", "val_unmasked_loss": "min"}
SCHEDULERS = ("fifo", "asha")
SETUP_FILE = SEARCH_SETUP_JSON
RUN_DIRNAME = "run"
STOP_FILE = "stop_requested"  # in a trial's run dir: its scheduler has stopped it (see StoppingASHA)
DEFAULT_SAMPLES, DEFAULT_SEED = 100, 42
ADDRESS_TIMEOUT_S = 10.0  # --address: how long to try to reach the head before giving up


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

    from .ndt.train import TrainError, train

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
        tune.report(_plain({**metrics, "trial_status": "running"}), checkpoint=checkpoint)
        return (run_dir / STOP_FILE).exists()  # the scheduler stopped this trial: end it like an early stop

    try:
        result = train(cfg, run_dir, report=report)
    except (TrainError, ConfigError) as err:
        # bad data or config fails the same way every time: recorded as errored, not retried
        write_json_atomic(run_dir.parent / "error.json", {"error": str(err)})
        tune.report({"trial_status": "errored", "error": str(err), metric: math.nan})
        return
    objective = result.best.get(metric, math.nan) if result.status != "diverged" else math.nan
    final = {k: v for k, v in result.best.items() if not k.startswith("step")}
    final.update({"step": result.step, "pass": result.passes, metric: objective, "trial_status": result.status,
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
        "samples": DEFAULT_SAMPLES if opts.samples is None else opts.samples,
        "seed": DEFAULT_SEED if opts.seed is None else opts.seed,
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


def _check_reachable(address: str, timeout_s: float = ADDRESS_TIMEOUT_S) -> None:
    """A HOST:PORT head that does not answer within ``timeout_s`` is an error, not a retry loop
    (Ray itself retries for minutes). ``auto`` and ``ray://`` addresses are left to Ray."""
    import socket

    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "6379")
    try:
        port_n = int(port)
    except ValueError:
        raise SearchError(f"--address {address}: expected HOST:PORT (e.g. 10.0.0.1:6379) or auto") from None
    try:
        socket.create_connection((host or address, port_n), timeout=timeout_s).close()
    except OSError as err:
        raise SearchError(f"cannot reach the Ray cluster at --address {address} within {timeout_s:g} s "
                          f"({err.strerror or err}); is `ray start --head` running there?") from None


def check_resources(opts: SearchOptions, cfg: RunConfig, gpus: float) -> None:
    """Requests the cluster can never grant fail now, not as a search that waits forever."""
    import ray

    have = ray.cluster_resources()
    cpus, n_gpus = float(have.get("CPU", 0)), float(have.get("GPU", 0))
    if opts.cpus_per_trial > cpus:
        raise SearchError(f"--cpus-per-trial {opts.cpus_per_trial:g}: the Ray cluster has {cpus:g} CPU(s)")
    if gpus > n_gpus:
        raise SearchError(f"--gpus-per-trial {gpus:g}: the Ray cluster has {n_gpus:g} GPU(s)"
                          + ("; use --gpus-per-trial 0 (CPU training)" if n_gpus == 0 else ""))
    if cfg.train.device == "cuda" and gpus == 0:
        raise SearchError("train.device is cuda but no GPU is reserved per trial "
                          f"(--gpus-per-trial 0, the cluster has {n_gpus:g}): set train.device=cpu or auto")


def check_options(opts: SearchOptions) -> None:
    """Every numeric option a user can get wrong, named by its flag."""
    def need(ok: bool, flag: str, value, what: str) -> None:
        if not ok:
            raise SearchError(f"{flag} {value}: {what}")

    if opts.samples is not None:
        need(opts.samples >= 1, "--samples", opts.samples, "expected at least 1 trial")
    if opts.seed is not None:
        need(opts.seed >= 0, "--seed", opts.seed, "expected a non-negative integer")
    need(opts.cpus_per_trial > 0, "--cpus-per-trial", opts.cpus_per_trial, "expected a positive number of CPUs")
    if opts.gpus_per_trial is not None:
        need(opts.gpus_per_trial >= 0, "--gpus-per-trial", opts.gpus_per_trial, "expected 0 or more GPUs")
    if opts.max_concurrent is not None:
        need(opts.max_concurrent >= 1, "--max-concurrent", opts.max_concurrent,
             "expected at least 1 (leave it out for as many as the resources allow)")
    if opts.num_cpus is not None:
        need(opts.num_cpus >= 1, "--num-cpus", opts.num_cpus, "expected at least 1 CPU")
        need(opts.address is None, "--num-cpus", opts.num_cpus, "sizes a local cluster; it cannot be used with --address")
    need(opts.max_failures >= 0, "--max-failures", opts.max_failures, "expected 0 or more retries")
    need(opts.n_initial_points >= 1, "--n-initial-points", opts.n_initial_points, "expected at least 1")


def check_data(cfg: RunConfig) -> None:
    """The configured data loaded once, before any trial: a bad raw_dir fails here in one line,
    not as every trial failing (and being retried) with the same loader error."""
    from .ndt.train import TrainError, load_phase

    try:
        load_phase(cfg, "val")
    except TrainError as err:
        raise SearchError(str(err)) from None


def _default_gpus(opts: SearchOptions) -> float:
    import ray

    if opts.gpus_per_trial is not None:
        return float(opts.gpus_per_trial)
    return 0.5 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _scheduler(opts: SearchOptions, cfg: RunConfig, experiment_dir: Path):
    if opts.scheduler == "fifo":
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()
    max_t = cfg.train.max_passes
    grace = max(cfg.train.val_interval_passes, max_t // 8)
    return _stopping_asha(experiment_dir, time_attr="pass", max_t=max_t, grace_period=min(grace, max_t),
                          reduction_factor=3)


def _stopping_asha(experiment_dir: Path, **kwargs):
    """ASHA whose stop decisions the trial carries out itself.

    Tune stops a trial by ending its actor, so a run stopped that way never writes its status or the
    rates of its kept checkpoints, and is never ranked. Here a STOP becomes a flag file in the run
    directory (shared storage, like the run itself) and CONTINUE; the trial reads the flag after its
    report and ends as an early-stopped run does (``status: stopped``).
    """
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class StoppingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP and result.get("trial_status") == "running":
                flag = run_dir_of(experiment_dir, trial.trial_id) / STOP_FILE
                flag.parent.mkdir(parents=True, exist_ok=True)
                flag.write_text(f"stopped by ASHA at pass {result.get('pass')}\n")
                return TrialScheduler.CONTINUE
            return decision

    return StoppingASHA(**kwargs)


def _trainable(setup: dict, experiment_dir: Path, gpus: float, cpus: float, checkpoint_every_s: float):
    from ray import tune

    fn = tune.with_parameters(run_trial, base_config=setup["base_config"], experiment_dir=str(experiment_dir),
                              metric=setup["metric"], checkpoint_every_s=checkpoint_every_s)
    return tune.with_resources(fn, {"cpu": cpus, "gpu": gpus})


def run_search(opts: SearchOptions):
    """Run (or resume) the search; returns Tune's ``ResultGrid``.

    Everything a user can get wrong is checked before anything is written: the options, the config
    and search space, the data (loaded once), and the resource requests against the cluster.
    """
    import ray
    from ray import tune

    from .searcher import SkoptSearcher

    if opts.metric not in METRIC_MODES:
        raise SearchError(f"--metric {opts.metric!r} is not one of {', '.join(METRIC_MODES)}")
    if opts.scheduler not in SCHEDULERS:
        raise SearchError(f"--scheduler {opts.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    check_options(opts)
    resolve(opts.dataset_key)
    exp_dir = opts.experiment_dir

    if opts.resume:
        setup = read_setup(exp_dir)
        if opts.overrides:
            raise SearchError("--set cannot change a search being resumed (it resumes with its stored config)")
        for flag, given, stored in (("--samples", opts.samples, setup["samples"]), ("--seed", opts.seed, setup["seed"])):
            if given is not None and given != stored:
                raise SearchError(f"{flag} {given}: the search being resumed has {flag} {stored} "
                                  f"({exp_dir / SETUP_FILE}); resume without {flag}, or start another with --name")
        if not tune.Tuner.can_restore(str(exp_dir)):
            raise SearchError(f"nothing to resume in {exp_dir} (no Tune experiment state)")
        cfg = config_from_dict(setup["base_config"], str(exp_dir / SETUP_FILE))
    else:
        if (exp_dir / SETUP_FILE).exists() or (exp_dir / "tuner.pkl").exists():
            raise SearchError(f"experiment {exp_dir} already exists: add --resume to continue it, "
                              "or --name to start another")
        cfg, space = _base_config(opts)
        setup = None
    if cfg.train.device == "cuda" and opts.gpus_per_trial == 0:
        raise SearchError("train.device is cuda but --gpus-per-trial is 0: set train.device=cpu or auto, "
                          "or reserve GPUs")
    if opts.address:
        _check_reachable(opts.address)  # before the data: an unreachable head is the quicker answer
    check_data(cfg)
    exp_dir.mkdir(parents=True, exist_ok=True)  # a read-only or blocked results folder fails before Ray

    start_reaper()
    init_ray(opts.address, opts.num_cpus, opts.verbose)
    try:
        interrupt_on_term()  # after ray.init, which installs its own SIGTERM handler (sys.exit)
        gpus = _default_gpus(opts)
        check_resources(opts, cfg, gpus)
        if gpus > 0 and cfg.train.device == "cpu":
            log.warning("train.device is cpu but %s GPU per trial is reserved", gpus)
        if setup is None:
            setup = _write_setup(opts, cfg, space)
        trainable = _trainable(setup, exp_dir, gpus, opts.cpus_per_trial, opts.checkpoint_every_s)
        print(f"experiment folder: {exp_dir}  ({'resuming' if opts.resume else 'new'}; "
              f"{setup['samples']} trials, {opts.cpus_per_trial:g} CPU + {gpus:g} GPU each)", flush=True)

        if opts.resume:
            tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
        else:
            space = space_from_dict(setup["search_space"], str(exp_dir / SETUP_FILE))
            # metric and mode go to the searcher itself: Tune only forwards TuneConfig's to a searcher
            # when a param_space is given, and here the searcher owns the whole space.
            searcher = SkoptSearcher(space, setup["metric"], setup["mode"], n_initial_points=opts.n_initial_points,
                                     acq_func=opts.acq_func, seed=setup["seed"])
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    metric=setup["metric"], mode=setup["mode"], search_alg=searcher,
                    scheduler=_scheduler(opts, cfg, exp_dir), num_samples=setup["samples"],
                    max_concurrent_trials=opts.max_concurrent, trial_dirname_creator=trial_dirname,
                ),
                run_config=tune.RunConfig(
                    name=opts.experiment_name, storage_path=str(opts.storage_path),
                    failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    verbose=opts.verbose,
                ),
            )
        return tuner.fit()
    finally:
        ray.shutdown()  # an interrupted or failed driver leaves no Ray process behind


_REAPER = r"""
import os, sys, time
import psutil
driver, me, known = psutil.Process(int(sys.argv[1])), os.getpid(), {}
while True:
    try:
        if driver.status() == psutil.STATUS_ZOMBIE:
            break
        known.update({c.pid: c for c in driver.children(recursive=True) if c.pid != me})
    except psutil.NoSuchProcess:
        break
    time.sleep(1.0)
for proc in known.values():
    try:
        proc.kill()  # psutil checks the start time: a reused pid is never hit
    except psutil.Error:
        pass
"""


def start_reaper() -> None:
    """A watcher that kills the Ray processes this driver started once the driver is gone.

    ``ray.shutdown`` covers every exit the driver sees; a ``kill -9`` it never sees, and then Ray's
    dashboard and runtime-env agents outlive it (they wait on the dead GCS). The watcher runs in its
    own session (a Ctrl-C on the terminal is the driver's to handle) and knows only the driver's
    descendants, by pid and start time."""
    import subprocess
    import sys

    subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid())], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _as_interrupt(signum, frame):
    # A dropped ssh/screen session (SIGHUP) or a polite kill (SIGTERM) ends like Ctrl-C: Tune's own
    # SIGINT handler stops the trials and saves the experiment state for --resume.
    os.kill(os.getpid(), signal.SIGINT)


def interrupt_on_term() -> None:
    """SIGTERM and SIGHUP behave as Ctrl-C does (Tune saves the experiment; --resume continues it)."""
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGHUP, signal.SIGTERM):
            signal.signal(sig, _as_interrupt)


def trial_outcomes(results) -> dict[str, str]:
    """Each trial's outcome, from its run directory on disk where there is one (Tune's last result
    lags behind: an interrupted driver may not have seen a trial's final report): a final run status
    (completed, early_stopped, stopped, diverged), errored, running (interrupted mid-run; --resume
    continues it) or not started."""
    outcomes = {}
    for r in results:
        trial_dir = Path(r.path) if r.path else None
        trial_id = trial_dir.name.removeprefix("trial_") if trial_dir else str(len(outcomes))
        status = {}
        if trial_dir is not None and (trial_dir / RUN_DIRNAME / "status.json").is_file():
            try:
                status = json.loads((trial_dir / RUN_DIRNAME / "status.json").read_text())
            except ValueError:
                status = {}
        disk = status.get("status")
        if disk in FINAL_STATUSES:
            outcomes[trial_id] = disk
        elif r.error or (r.metrics or {}).get("trial_status") == "errored" \
                or (trial_dir is not None and (trial_dir / "error.json").is_file()):
            outcomes[trial_id] = "errored"
        elif disk == "running" or (r.metrics or {}).get("trial_status") == "running":
            outcomes[trial_id] = "running"
        else:
            outcomes[trial_id] = "not started"
    return outcomes


def search_exit(outcomes: dict[str, str], planned: int) -> tuple[int, str | None]:
    """The driver's exit code and its last line: 130 for a search cut short (Ctrl-C, SIGTERM, SIGHUP:
    --resume continues it), 1 for a search in which no trial finished, 0 otherwise."""
    ended = sum(1 for s in outcomes.values() if s in FINAL_STATUSES or s == "errored")
    if ended < planned:
        return 130, f"search incomplete ({ended} of {planned} trials ended)"
    if not any(s in FINAL_STATUSES for s in outcomes.values()):
        errored = sum(1 for s in outcomes.values() if s == "errored")
        return 1, f"no trial finished ({errored} errored; see each trial's error.json or error.txt)"
    return 0, None


def summarize(results) -> dict:
    """Counts of trial outcomes (:func:`trial_outcomes`), for the last line a user reads."""
    counts: dict[str, int] = {}
    for status in trial_outcomes(results).values():
        counts[status] = counts.get(status, 0) + 1
    return counts
