"""The search's driver process and the Ray it starts: joining or starting Ray quietly, SIGTERM and
SIGHUP handled as Ctrl-C (Tune saves the experiment; ``--resume`` continues it), and a reaper that
ends the driver's Ray processes after a ``kill -9`` the driver never sees.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from .search_options import SearchError


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


def _as_interrupt(signum, frame):
    # A dropped ssh/screen session (SIGHUP) or a polite kill (SIGTERM) ends like Ctrl-C: Tune's own
    # SIGINT handler stops the trials and saves the experiment state for --resume.
    os.kill(os.getpid(), signal.SIGINT)


def interrupt_on_term() -> None:
    """SIGTERM and SIGHUP behave as Ctrl-C does (Tune saves the experiment; --resume continues it).

    Install it again after ``ray.init``, which sets its own SIGTERM handler (``sys.exit``)."""
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGHUP, signal.SIGTERM):
            signal.signal(sig, _as_interrupt)


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
