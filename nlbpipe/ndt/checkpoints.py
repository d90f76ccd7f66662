"""A training run's folders: kept checkpoints, resume state, progress and status, and loading a
checkpoint back (shared by training, ranking and inference). Names come from ``nlbpipe.contracts``.

A folder is filled under a temporary name and swapped in, so a crash never leaves a half-written
checkpoint under its final name; :func:`recover_dir` finishes a swap a crash interrupted.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from ..config import RunConfig, load_config, save_config
from ..contracts import (
    CHECKPOINT_KINDS,
    CHECKPOINTS_DIR,
    LAST_DIR,
    METRICS_JSON,
    MODEL_FILE,
    PROGRESS_CSV,
    RUN_CONFIG,
    STATUS_JSON,
)
from ..datasets import bin_ms_of
from ..errors import NlbpipeError
from ..fileio import write_json_atomic, write_text_atomic
from .model import NDT, ModelError, build_model

_RESUMABLE_DIFFERENCES = {("train", "device"), ("train", "num_threads")}  # may change between a run and its resume


class InferenceError(NlbpipeError, RuntimeError):
    """A checkpoint or tensor that cannot be used; names the file or key."""


def replace_dir(final: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary folder, then swap it in: a crash never leaves a half checkpoint under ``final``."""
    tmp = final.with_name(f".{final.name}.tmp")
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: Path) -> None:
    """Finish a swap a crash interrupted: the old folder comes back if the new one never landed."""
    old = final.with_name(f".{final.name}.old")
    if not final.exists() and old.exists():
        old.rename(final)
    shutil.rmtree(final.with_name(f".{final.name}.tmp"), ignore_errors=True)


def write_checkpoint(folder: Path, model: NDT, cfg: RunConfig, metrics: dict) -> None:
    def fill(tmp: Path):
        torch.save(model.state_dict(), tmp / MODEL_FILE)
        save_config(cfg, tmp / RUN_CONFIG)
        write_json_atomic(tmp / METRICS_JSON, metrics)

    replace_dir(folder, fill)


PROGRESS_COLUMNS = ("step", "pass", "train_loss", "val_masked_loss", "val_unmasked_loss", "val_co_bps", "lr",
                    "best_val_masked_loss", "best_val_unmasked_loss", "best_val_co_bps", "elapsed_s")


def write_progress(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PROGRESS_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(path, buf.getvalue())


def write_status(run_dir: Path, status: str, step: int, best: dict, message: str = "", passes: int = 0) -> None:
    """``status.json``: one of ``contracts``' run statuses, the step and pass, the best metrics, why it ended."""
    write_json_atomic(run_dir / STATUS_JSON, {"status": status, "step": step, "passes": passes, "best": best,
                                                "message": message,
                                                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def config_differences(cfg: RunConfig, run_dir: Path) -> list[str]:
    """The keys in which ``cfg`` differs from the run already in ``run_dir`` (none: it may resume)."""
    saved_path = run_dir / RUN_CONFIG
    if not saved_path.is_file() or not started(run_dir):
        return []  # a run that failed on its input never trained: a corrected config may use the folder
    saved = load_config(saved_path).to_dict()
    now = cfg.to_dict()
    return [f"{s}.{k}" for s in now for k in now[s] if now[s][k] != saved[s].get(k)
            and (s, k) not in _RESUMABLE_DIFFERENCES]


def started(run_dir: Path) -> bool:
    """Whether a run trained in ``run_dir`` (resume state, status, progress or a kept checkpoint)."""
    return ((run_dir / LAST_DIR / "state.pt").is_file() or (run_dir / STATUS_JSON).is_file()
            or (run_dir / PROGRESS_CSV).is_file() or bool(kept_checkpoints(run_dir)))


def kept_checkpoints(run_dir: Path) -> dict[str, Path]:
    return {k: run_dir / CHECKPOINTS_DIR / k for k in CHECKPOINT_KINDS if (run_dir / CHECKPOINTS_DIR / k / MODEL_FILE).is_file()}


def recover_run_dir(run_dir: Path) -> None:
    for folder in [run_dir / LAST_DIR, *(run_dir / CHECKPOINTS_DIR / k for k in CHECKPOINT_KINDS)]:
        recover_dir(folder)


def checkpoint_dir(run_dir: Path, kind: str) -> Path:
    return run_dir / CHECKPOINTS_DIR / kind


def load_checkpoint(ckpt_dir: str | os.PathLike, device: str | torch.device | None = "cpu") -> tuple[NDT, RunConfig]:
    """Rebuild the NDT of a checkpoint folder (model.pt + config.yaml) in eval mode; nothing unpickled."""
    ckpt_dir = Path(ckpt_dir)
    for name in (MODEL_FILE, RUN_CONFIG):
        if not (ckpt_dir / name).is_file():
            raise InferenceError(f"checkpoint {ckpt_dir} has no {name}")
    cfg = load_config(ckpt_dir / RUN_CONFIG)
    try:
        state = torch.load(ckpt_dir / MODEL_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several kinds for a corrupt or pickled file
        raise InferenceError(f"{ckpt_dir / 'model.pt'} is not a loadable state_dict: {err}") from None
    if "dims" not in state:
        raise InferenceError(f"{ckpt_dir / 'model.pt'} lacks the 'dims' buffer; not an nlbpipe NDT checkpoint")
    trial_bins, forward_bins, n_heldin, n_heldout = (int(v) for v in state["dims"])
    try:
        model = build_model(cfg.model, trial_bins, forward_bins, n_heldin, n_heldout, bin_ms_of(cfg.data.dataset))
    except ModelError as err:
        raise InferenceError(f"checkpoint {ckpt_dir}: {err}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise InferenceError(f"{ckpt_dir / 'model.pt'} does not match its config.yaml: {err}") from None
    model.to(device or "cpu").eval()
    return model, cfg
