"""The Ray Tune experiment: many NDT trainings chosen by Bayesian optimisation, resumable.

Experiment folder (``<results_dir>/<dataset_key>/<name>/``, docs/architecture.md)::

    search_setup.json          what was searched: base run config, search space, metric, seed
    tuner.pkl, experiment_state-*.json, searcher-state-*.pkl, search_gen_state-*.json   (Ray Tune's)
    trial_<trial_id>/          Tune's trial folder: params.json, result.json, checkpoint_*/ ...
        error.json             only for a trial that failed on its data or config (not retried)
        run/                   the nlbpipe.ndt.train run directory: config.yaml, status.json,
                               progress.csv, last/, checkpoints/{best_masked_loss,...}/,
                               stop_requested (only once ASHA has stopped the trial)
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

Beside this module: ``search_options`` (``SearchOptions``, the flags' fields and defaults),
``search_checks`` (everything checked before anything is written) and ``ray_driver`` (Ray started or
joined, SIGTERM/SIGHUP as Ctrl-C, the reaper of Ray processes after a ``kill -9``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from . import contracts
from .config import ConfigError, RunConfig, apply_overrides, config_from_dict, load_config
from .contracts import SEARCH_SETUP_JSON, STATUS_JSON, STOP_REQUESTED, TRIAL_ERROR_JSON, TRIAL_RUN_DIR
from .contracts import TERMINAL_STATUSES as FINAL_STATUSES  # a run that has ended
from .datasets import resolve
from .fileio import write_json_atomic
from .ray_driver import init_ray, interrupt_on_term, start_reaper
from .search_checks import check_address, check_data, check_device, check_options, check_resources, default_gpus
from .search_options import DEFAULT_SAMPLES, DEFAULT_SEED, SearchError, SearchOptions
from .search_space import SearchSpace, load_search_space, search_space_path, space_from_dict

log = logging.getLogger(__name__)


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

    cfg = apply_overrides(config_from_dict(base_config, SEARCH_SETUP_JSON), params, "search space")
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
        return (run_dir / STOP_REQUESTED).exists()  # the scheduler stopped this trial: end it like an early stop

    try:
        result = train(cfg, run_dir, report=report)
    except (TrainError, ConfigError) as err:
        # bad data or config fails the same way every time: recorded as errored, not retried
        write_json_atomic(run_dir.parent / TRIAL_ERROR_JSON, {"error": str(err)})
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
    write_json_atomic(opts.experiment_dir / SEARCH_SETUP_JSON, setup)
    return setup


def read_setup(experiment_dir: Path) -> dict:
    path = Path(experiment_dir) / SEARCH_SETUP_JSON
    if not path.is_file():
        raise SearchError(f"{experiment_dir} is not an nlbpipe search experiment (no {SEARCH_SETUP_JSON})")
    return json.loads(path.read_text())


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
                flag = run_dir_of(experiment_dir, trial.trial_id) / STOP_REQUESTED
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
                                  f"({exp_dir / SEARCH_SETUP_JSON}); resume without {flag}, or start another with --name")
        if not tune.Tuner.can_restore(str(exp_dir)):
            raise SearchError(f"nothing to resume in {exp_dir} (no Tune experiment state)")
        cfg = config_from_dict(setup["base_config"], str(exp_dir / SEARCH_SETUP_JSON))
    else:
        if (exp_dir / SEARCH_SETUP_JSON).exists() or (exp_dir / "tuner.pkl").exists():
            raise SearchError(f"experiment {exp_dir} already exists: add --resume to continue it, "
                              "or --name to start another")
        cfg, space = _base_config(opts)
        setup = None
    check_device(cfg, opts.gpus_per_trial)
    if opts.address:
        check_address(opts.address)  # before the data: an unreachable head is the quicker answer
    check_data(cfg)
    exp_dir.mkdir(parents=True, exist_ok=True)  # a read-only or blocked results folder fails before Ray

    start_reaper()
    init_ray(opts.address, opts.num_cpus, opts.verbose)
    try:
        interrupt_on_term()  # after ray.init, which installs its own SIGTERM handler (sys.exit)
        gpus = default_gpus(opts)
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
            space = space_from_dict(setup["search_space"], str(exp_dir / SEARCH_SETUP_JSON))
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


def trial_outcomes(results) -> dict[str, str]:
    """Each trial's outcome, from its run directory on disk where there is one (Tune's last result
    lags behind: an interrupted driver may not have seen a trial's final report): a final run status
    (completed, early_stopped, stopped, diverged), errored, running (interrupted mid-run; --resume
    continues it) or not started."""
    outcomes = {}
    for r in results:
        trial_dir = Path(r.path) if r.path else None
        trial_id = trial_dir.name.removeprefix(contracts.TRIAL_PREFIX) if trial_dir else str(len(outcomes))
        status = {}
        if trial_dir is not None and (trial_dir / TRIAL_RUN_DIR / STATUS_JSON).is_file():
            try:
                status = json.loads((trial_dir / TRIAL_RUN_DIR / STATUS_JSON).read_text())
            except ValueError:
                status = {}
        disk = status.get("status")
        if disk in FINAL_STATUSES:
            outcomes[trial_id] = disk
        elif r.error or (r.metrics or {}).get("trial_status") == "errored" \
                or (trial_dir is not None and (trial_dir / TRIAL_ERROR_JSON).is_file()):
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
        return 1, f"no trial finished ({errored} errored; see each trial's {TRIAL_ERROR_JSON} or error.txt)"
    return 0, None


def summarize(results) -> dict:
    """Counts of trial outcomes (:func:`trial_outcomes`), for the last line a user reads."""
    counts: dict[str, int] = {}
    for status in trial_outcomes(results).values():
        counts[status] = counts.get(status, 0) + 1
    return counts
