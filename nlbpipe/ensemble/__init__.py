"""Ensembles of checkpoints by validation co-bps: the 2021 winners' top-N mean, and greedy selection.

- :mod:`.statistics`: each checkpoint reduced to what val co-bps needs; any weighted mean scored exactly.
- :mod:`.selection`: top-N and greedy (Caruana) selection, cross-validated over val trials.
- :mod:`.build`: the library from an experiment folder (``nlbpipe.ranking``'s checkpoint table), scored
  and selected; the val targets it is scored against.
- :mod:`.smoothing`: the chosen ensemble's rates smoothed over time, the width chosen on val co-bps.
- :mod:`.output`: the files build_ensemble.py writes, the curve plot, the terminal summary.

Rate arithmetic (``weighted_mean_rates``) lives with the rates files in ``nlbpipe.rates``.
"""

from ..errors import EnsembleError
from ..ranking import Checkpoint, find_experiment, read_checkpoints_csv, with_rates
from ..rates import weighted_mean_rates
from .build import MAX_MODELS, EnsembleResult, build_ensemble, build_library, data_dirs, ensemble_rates, val_targets
from .output import ensemble_record, plot_curve, stderr_log, summary_lines, write_ensemble
from .selection import METHODS, SELECT_DEFAULTS, Selection, SelectionResult, choose, fold_masks, select
from .smoothing import RateSmoothing, choose_smoothing, smooth_rates
from .statistics import HeldoutScorer, log_rates

__all__ = [
    "MAX_MODELS", "METHODS", "SELECT_DEFAULTS", "Checkpoint", "EnsembleError", "EnsembleResult", "HeldoutScorer", "RateSmoothing", "Selection", "SelectionResult",
    "build_ensemble", "build_library", "choose", "choose_smoothing", "data_dirs", "ensemble_rates", "ensemble_record",
    "find_experiment", "fold_masks", "log_rates", "plot_curve", "read_checkpoints_csv", "select", "smooth_rates", "stderr_log",
    "summary_lines", "val_targets", "weighted_mean_rates", "with_rates", "write_ensemble",
]
