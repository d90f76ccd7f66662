"""What a search checks before it writes anything: each option by its flag, the run config's device
against the GPUs asked for, the ``--address`` head (answering within 10 s), the data (loaded once)
and the CPU/GPU requests against what the Ray cluster has.

Everything a user can get wrong fails here in one line naming the flag or file, not as a search that
waits forever or as every trial failing (and being retried) the same way.
"""

from __future__ import annotations

from .config import RunConfig
from .search_options import METRIC_MODES, SCHEDULERS, SearchError, SearchOptions

ADDRESS_TIMEOUT_S = 10.0  # --address: how long to try to reach the head before giving up


def check_options(opts: SearchOptions) -> None:
    """Every option a user can get wrong, named by its flag."""
    if opts.metric not in METRIC_MODES:
        raise SearchError(f"--metric {opts.metric!r} is not one of {', '.join(METRIC_MODES)}")
    if opts.scheduler not in SCHEDULERS:
        raise SearchError(f"--scheduler {opts.scheduler!r} is not one of {', '.join(SCHEDULERS)}")

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


def check_device(cfg: RunConfig, gpus_per_trial: float | None) -> None:
    """A cuda run config with ``--gpus-per-trial 0`` could never train (before the cluster is asked)."""
    if cfg.train.device == "cuda" and gpus_per_trial == 0:
        raise SearchError("train.device is cuda but --gpus-per-trial is 0: set train.device=cpu or auto, "
                          "or reserve GPUs")


def check_address(address: str, timeout_s: float = ADDRESS_TIMEOUT_S) -> None:
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


def check_data(cfg: RunConfig) -> None:
    """The configured data loaded once, before any trial: a bad raw_dir fails here in one line,
    not as every trial failing (and being retried) with the same loader error."""
    from .ndt.train import TrainError, load_phase

    try:
        load_phase(cfg, "val")
    except TrainError as err:
        raise SearchError(str(err)) from None


def default_gpus(opts: SearchOptions) -> float:
    """GPUs per trial: ``--gpus-per-trial``, else 0.5 on a cluster with GPUs and 0 on one without."""
    import ray

    if opts.gpus_per_trial is not None:
        return float(opts.gpus_per_trial)
    return 0.5 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


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
