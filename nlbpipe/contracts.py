"""The on-disk contracts between stages, named once: file and folder names, run statuses, phases,
submission groups. docs/architecture.md describes the layouts; the names themselves live here.

Each stage writes and reads these through this module, so a name is changed in one place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .datasets import all_keys
from .errors import NlbpipeError

# ----------------------------------------------------------------------------------- phases
PHASES = ("val", "test")  # val: targets known (train split / val split); test: targets hidden


class UnknownPhaseError(NlbpipeError, ValueError):
    """A phase that is not ``val`` or ``test``."""


def check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise UnknownPhaseError(f"phase must be one of {PHASES}, got {phase!r}")


# ------------------------------------------------------------------------------ cached tensors
# The val split's held-out spikes as nlb_tools' eval *targets* hold them: what NLB scores co-bps on.
# For dmfc_rsg they are NaN outside set..go (the input tensor covers -1500..0 ms before go); for the
# other datasets they equal eval_spikes_heldout.
SCORED_KEY = "eval_target_spikes_heldout"

# ------------------------------------------------------------------------------ raw data files
EVAL_TARGETS_NAME = "eval_data_test.h5"  # hidden test targets beside a synthetic test NWB
TRUE_RATES_NAME = "true_rates.h5"  # ground-truth rates beside a synthetic test NWB
SYNTHETIC_MANIFEST = "synthetic_manifest.json"  # at the synthetic root

# ---------------------------------------------------------------------------------- config dir
GENERATED_HASHES = ".generated.json"  # CONFIG_DIR: hash of each generated config

# ----------------------------------------------------------------------------- a training run
RUN_CONFIG = "config.yaml"  # the resolved run config (also in each checkpoint folder)
PROGRESS_CSV = "progress.csv"
STATUS_JSON = "status.json"
LAST_DIR = "last"  # resume state
CHECKPOINTS_DIR = "checkpoints"  # one folder per kept checkpoint kind
CHECKPOINT_KINDS = ("best_masked_loss", "best_unmasked_loss", "best_co_bps")
MODEL_FILE = "model.pt"  # a plain state_dict
METRICS_JSON = "metrics.json"

# run statuses (status.json)
RUNNING = "running"
COMPLETED = "completed"
EARLY_STOPPED = "early_stopped"
STOPPED = "stopped"  # by a search's scheduler (ASHA); ends as an early stop does
DIVERGED = "diverged"
TERMINAL_STATUSES = (COMPLETED, EARLY_STOPPED, STOPPED, DIVERGED)


def rates_filename(phase: str) -> str:
    """``rates_val.h5`` / ``rates_test.h5``: a checkpoint's (or an ensemble's) predictions for a phase."""
    check_phase(phase)
    return f"rates_{phase}.h5"


RATES_VAL = rates_filename("val")
RATES_TEST = rates_filename("test")


def read_status(run_dir: str | os.PathLike) -> dict:
    """``status.json`` of a run folder; ``{}`` when it is missing or unreadable (a run not started)."""
    try:
        return json.loads((Path(run_dir) / STATUS_JSON).read_text())
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------------- an experiment folder
SEARCH_SETUP_JSON = "search_setup.json"  # what --resume uses
CHECKPOINTS_CSV = "checkpoints.csv"  # one row per kept checkpoint, best val co-bps first
SEARCH_PROGRESS_PNG = "search_progress.png"
TRIAL_PREFIX = "trial_"
TRIAL_RUN_DIR = "run"  # trial_<id>/run/ is the training run folder
STOP_REQUESTED = "stop_requested"  # trial_<id>/run/stop_requested: the scheduler (ASHA) stopped the trial
TRIAL_ERROR_JSON = "error.json"  # trial_<id>/error.json: the trial failed on its data or config (not retried)


def trial_dirname(trial_id: str) -> str:
    return f"{TRIAL_PREFIX}{trial_id}"


def trial_run_dir(experiment_dir: str | os.PathLike, trial_id: str) -> Path:
    return Path(experiment_dir) / trial_dirname(trial_id) / TRIAL_RUN_DIR


# ------------------------------------------------------------------------ ensemble, submission
ENSEMBLE_JSON = "ensemble.json"  # written last: its presence means every file it names is complete
ENSEMBLE_CURVE_PNG = "ensemble_curve.png"
EVALAI_GROUPS = tuple(all_keys())  # the 14 groups an EvalAI submission file may hold


def submission_filename(dataset_key: str) -> str:
    """``<dataset_key>_submission.h5``: the file build_ensemble.py writes and EvalAI takes."""
    return f"{dataset_key}_submission.h5"
