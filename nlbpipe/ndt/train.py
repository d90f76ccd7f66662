"""One NDT training run: the unit a Ray Tune trial runs, and ``python -m nlbpipe.train``.

``train()`` prepares the run folder (``nlbpipe.ndt.checkpoints``) and hands the loop to a run object
(``_Run.fit``) that holds all mutable state.

A run is a pure function of its config and data: everything random comes from the seed, and the
resume state in ``run_dir/last/`` holds every piece of state (weights, optimizer, step, data order,
early-stopping state, RNGs), so a killed run resumed from it ends exactly where an uninterrupted run
would. The data live on the device for the whole run and the loop never waits on the device except
at validation, which is where losses are read, checkpoints kept and progress reported.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import contracts
from ..config import RunConfig, save_config
from ..contracts import CHECKPOINT_KINDS, LAST_DIR, RATES_TEST, RATES_VAL, RUN_CONFIG
from ..datasets import bin_ms_of
from ..errors import NlbpipeError
from ..scoring import co_bps_torch
from . import checkpoints as folders
from . import masking
from .masking import Layout
from .model import ModelError, build_model

log = logging.getLogger(__name__)

_KIND_METRIC = {"best_masked_loss": ("val_masked_loss", -1), "best_unmasked_loss": ("val_unmasked_loss", -1),
                "best_co_bps": ("val_co_bps", +1)}  # metric, and the sign of "better"
VAL_MASK_SEED_OFFSET = 7919  # the val batch is masked the same way at every validation


class TrainError(NlbpipeError, RuntimeError):
    """A run that cannot start or continue; the message names the tensor, file or key at fault."""


@dataclass
class RunResult:
    status: str  # "completed" | "early_stopped" | "stopped" (by a search's scheduler) | "diverged"
    step: int  # optimizer steps (minibatches) taken
    best: dict
    checkpoints: dict[str, Path] = field(default_factory=dict)
    passes: int = 0  # passes over the training trials completed


# ----------------------------------------------------------------------------------------- data

def _require(tensors: dict, key: str, where: str) -> np.ndarray:
    if key not in tensors:
        raise TrainError(f"{where} tensors lack {key!r} (have {', '.join(sorted(tensors)) or 'none'})")
    arr = np.asarray(tensors[key])
    if arr.ndim != 3:
        raise TrainError(f"{where} tensor {key!r} has shape {arr.shape}; expected [trials, bins, neurons]")
    return arr


def full_counts(tensors: dict, prefix: str, where: str = "val-phase") -> np.ndarray:
    """[trials, T+F, N_heldin+N_heldout]: trial bins then forward bins, held-in neurons then held-out."""
    parts = {k: _require(tensors, f"{prefix}_spikes_{k}", where)
             for k in ("heldin", "heldout", "heldin_forward", "heldout_forward")}
    hi, ho, hif, hof = parts["heldin"], parts["heldout"], parts["heldin_forward"], parts["heldout_forward"]
    for key, arr, trials, bins, neurons in (
            ("heldout", ho, hi.shape[0], hi.shape[1], None),
            ("heldin_forward", hif, hi.shape[0], None, hi.shape[2]),
            ("heldout_forward", hof, hi.shape[0], hif.shape[1], ho.shape[2])):
        want = (trials, bins, neurons)
        if any(w is not None and a != w for a, w in zip(arr.shape, want)):
            raise TrainError(f"{where} tensor {prefix}_spikes_{key} has shape {arr.shape}, inconsistent with "
                             f"{prefix}_spikes_heldin {hi.shape} (expected {tuple('*' if w is None else w for w in want)})")
    trial = np.concatenate([hi, ho], axis=2)
    fwd = np.concatenate([hif, hof], axis=2)
    return np.ascontiguousarray(np.concatenate([trial, fwd], axis=1), dtype=np.float32)


def layout_of(tensors: dict) -> Layout:
    hi = _require(tensors, "train_spikes_heldin", "val-phase")
    return Layout(trial_bins=hi.shape[1],
                  forward_bins=_require(tensors, "train_spikes_heldin_forward", "val-phase").shape[1],
                  n_heldin=hi.shape[2],
                  n_heldout=_require(tensors, "train_spikes_heldout", "val-phase").shape[2])


def load_phase(cfg: RunConfig, phase: str) -> dict:
    from ..tensors import DataFileError, load_tensors  # imported late: only runs not handed tensors need it

    raw, cache = (Path(d) if d else None for d in (cfg.data.raw_dir, cfg.data.cache_dir))
    try:
        return load_tensors(cfg.data.dataset, phase, raw, cache)
    except (DataFileError, OSError, KeyError, ValueError) as err:
        raise TrainError(f"cannot load the {phase}-phase tensors of {cfg.data.dataset} "
                         f"(data.raw_dir={cfg.data.raw_dir or '<default>'}): {err}") from None


# ----------------------------------------------------------------------------------- schedule

def steps_per_pass(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one pass over the training trials (the last batch may be short)."""
    return max(1, math.ceil(n_train / batch_size))


def learning_rate(cfg: RunConfig, step: int, per_pass: int = 1) -> float:
    """Linear warm-up over ``warmup_passes``, then constant or cosine decay to 0 at ``max_passes``.

    Counted in passes, as the 2021 NDT did, but applied per step (``per_pass`` steps to a pass): the
    same curve, without its steps.
    """
    t = cfg.train
    warmup, total = t.warmup_passes * per_pass, t.max_passes * per_pass
    if warmup and step < warmup:
        return t.lr * (step + 1) / warmup
    if t.lr_schedule == "constant":
        return t.lr
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return t.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def pick_device(cfg: RunConfig) -> torch.device:
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise TrainError("train.device is 'cuda' but no CUDA device is available")
    if cfg.train.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


# ------------------------------------------------------------------------------------ the run

class _Run:
    """The mutable state of one run; everything in it goes into ``last/`` so resume is exact."""

    def __init__(self, cfg: RunConfig, run_dir: Path, tensors: dict, device: torch.device):
        self.cfg, self.run_dir, self.device = cfg, run_dir, device
        self.layout = layout_of(tensors)
        self.train_counts = torch.from_numpy(full_counts(tensors, "train")).to(device)
        self.val_counts = torch.from_numpy(full_counts(tensors, "eval")).to(device)
        if self.train_counts.shape[1:] != self.val_counts.shape[1:]:
            raise TrainError(f"train tensors are {tuple(self.train_counts.shape[1:])} [bins, neurons] per trial "
                             f"but eval tensors are {tuple(self.val_counts.shape[1:])}")
        # co-bps on what NLB scores: nlb_tools' eval targets (dmfc_rsg: NaN outside set..go, left out)
        scored = tensors.get(contracts.SCORED_KEY, tensors["eval_spikes_heldout"])
        if np.shape(scored) != np.shape(tensors["eval_spikes_heldout"]):
            raise TrainError(f"{contracts.SCORED_KEY} has shape {np.shape(scored)}, eval_spikes_heldout "
                             f"{np.shape(tensors['eval_spikes_heldout'])}")
        self.val_heldout = torch.as_tensor(np.asarray(scored), dtype=torch.float64, device=device)
        L = self.layout
        try:
            self.model = build_model(cfg.model, L.trial_bins, L.forward_bins, L.n_heldin, L.n_heldout,
                                     bin_ms_of(cfg.data.dataset)).to(device)
        except ModelError as err:
            raise TrainError(str(err)) from None
        if cfg.model.readout_bias == "mean_rate":
            trial = self.train_counts[:, : L.trial_bins]
            self.model.set_mean_rates(torch.nanmean(trial.reshape(-1, trial.shape[-1]), dim=0))
        # random replacement counts stay within what the data (and a count embedding) can express
        max_count = int(torch.nan_to_num(self.train_counts[:, : L.trial_bins, : L.n_heldin]).max().item())
        self.max_count = max(1, min(max_count, cfg.model.max_spike_count) if cfg.model.embedding == "count" else max_count)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr,
                                           weight_decay=cfg.train.weight_decay)
        self.mask_gen = torch.Generator(device=device).manual_seed(cfg.train.seed + 1)
        # the span width of each batch is drawn on the CPU: a host-side number, no wait on the device
        self.span_gen = torch.Generator().manual_seed(cfg.train.seed + 2)
        self.per_pass = steps_per_pass(self.train_counts.shape[0], cfg.train.batch_size)
        self.step = 0
        self.perm = torch.empty(0, dtype=torch.long, device=device)
        self.cursor = 0
        self.best = {"val_masked_loss": math.inf, "val_unmasked_loss": math.inf, "val_co_bps": -math.inf,
                     "step_masked_loss": -1, "step_unmasked_loss": -1, "step_co_bps": -1}
        self.history: list[dict] = []
        self.elapsed = 0.0
        # bf16 autocast on CUDA, and on CPUs with bf16 matrix units (AMX), where it is several times faster
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.bf16)

    # -- batches: one shuffled pass over the train trials after another; a short last batch is kept
    def next_batch(self) -> torch.Tensor:
        n = self.train_counts.shape[0]
        if self.cursor >= self.perm.numel():
            self.perm = torch.randperm(n, generator=self.mask_gen, device=self.device)
            self.cursor = 0
        idx = self.perm[self.cursor: self.cursor + self.cfg.train.batch_size]
        self.cursor += self.cfg.train.batch_size
        return self.train_counts[idx]

    def train_step(self) -> torch.Tensor:
        cfg = self.cfg.train
        targets = self.next_batch()
        span = masking.draw_span(cfg, masking.span_probability(cfg, self.step / self.per_pass), self.span_gen)
        x, loss_mask = masking.mask_batch(targets, self.layout, cfg, span, self.max_count, self.mask_gen)
        lr = learning_rate(self.cfg, self.step, self.per_pass)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        # the batch mean over masked tokens, accumulated chunk by chunk: the same gradient as one
        # pass over the batch, with a chunk's activations in memory instead of the batch's
        count = loss_mask.sum().clamp(min=1)
        chunk = cfg.micro_batch_size or targets.shape[0]
        total = torch.zeros((), device=targets.device)
        for start in range(0, targets.shape[0], chunk):
            part = slice(start, start + chunk)
            with self.autocast:
                log_rates = self.model(x[part])
            nll, _ = masking.poisson_loss_sum(log_rates.float(), targets[part], loss_mask[part])
            (nll / count).backward()
            total += nll.detach()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        return total / count

    @torch.no_grad()
    def validate(self) -> dict:
        """Masked loss (fixed masks, width 1 as in the 2021 NDT), unmasked loss (held-out neurons +
        forward bins), co-bps on val trials.

        Val trials go in chunks of the train batch size: the memory the train steps freed fits them,
        so validation adds nothing to the peak.
        """
        batch_size = self.cfg.train.batch_size
        self.model.eval()
        L, cfg = self.layout, self.cfg.train
        # fixed: the same mask every validation; fresh (as 2021): a new one each time, still from the seed
        fresh = self.step if cfg.val_mask == "fresh" else 0
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed + VAL_MASK_SEED_OFFSET + fresh)
        span = 1  # single tokens, as the 2021 NDT validated; one fixed objective across the run
        m_sum = m_cnt = u_sum = u_cnt = 0.0
        heldout_rates = []
        for start in range(0, self.val_counts.shape[0], batch_size):
            targets = self.val_counts[start: start + batch_size]
            with self.autocast:
                x, mask = masking.mask_batch(targets, L, cfg, span, self.max_count, gen)
                masked_lr = self.model(x).float()
                plain_lr = self.model(masking.model_input(targets, L)).float()
            s, c = masking.poisson_loss_sum(masked_lr, targets, mask)
            m_sum, m_cnt = m_sum + s, m_cnt + c
            s, c = masking.poisson_loss_sum(plain_lr, targets, masking.unmasked_loss_mask(targets.shape, L, self.device, targets))
            u_sum, u_cnt = u_sum + s, u_cnt + c
            heldout_rates.append(torch.exp(plain_lr[:, : L.trial_bins, L.n_heldin:]))
        self.model.train()
        rates = torch.cat(heldout_rates).double()
        return {"val_masked_loss": float(m_sum / m_cnt), "val_unmasked_loss": float(u_sum / u_cnt),
                "val_co_bps": co_bps_torch(rates, self.val_heldout)}

    @property
    def passes(self) -> int:
        return self.step // self.per_pass

    def should_stop(self) -> tuple[bool, str]:
        """Early stopping: ``patience_passes`` passes without a better value of the watched metric(s);
        with ``both`` (STNDT's rule) only when neither val masked loss nor val co-bps improved."""
        t = self.cfg.train
        if t.patience_passes == -1:
            return False, ""
        watched = {"masked_loss": ("masked_loss",), "co_bps": ("co_bps",), "both": ("masked_loss", "co_bps")}[t.early_stop]
        waits = {m: (self.step - self.best[f"step_{m}"]) // self.per_pass for m in watched}
        if min(waits.values()) < t.patience_passes:
            return False, ""
        names = {"masked_loss": "val masked loss", "co_bps": "val co-bps"}
        return True, f"no better {' or '.join(names[m] for m in watched)} for {min(waits.values())} passes"

    # -- the loop: passes over the train trials; every val_interval_passes passes validate, keep
    #    checkpoints, save, report
    def fit(self, report: Callable[[dict, Path | None], None] | None = None) -> tuple[str, str]:
        """Train until the budget, early stopping or divergence; returns (status, message)."""
        cfg = self.cfg
        t = cfg.train
        status, message = contracts.COMPLETED, ""
        loss_sum = torch.zeros((), device=self.device)
        losses_since = 0
        t0 = time.perf_counter() - self.elapsed
        max_steps, val_steps = t.max_passes * self.per_pass, t.val_interval_passes * self.per_pass
        while self.step < max_steps:
            loss_sum += self.train_step()
            losses_since += 1
            if self.step % val_steps and self.step < max_steps:
                continue
            # ---- validation: the one place the loop reads values back from the device
            train_loss = float(loss_sum / losses_since)
            loss_sum.zero_()
            losses_since = 0
            if not math.isfinite(train_loss):
                status, message = contracts.DIVERGED, f"train loss became {train_loss} by update {self.step}"
                break
            metrics = {"step": self.step, "pass": self.passes, "train_loss": train_loss, **self.validate(),
                       "lr": learning_rate(cfg, self.step - 1, self.per_pass)}
            if not all(math.isfinite(metrics[k]) for k in ("val_masked_loss", "val_unmasked_loss", "val_co_bps")):
                status, message = contracts.DIVERGED, f"validation at update {self.step} gave a non-finite value: {metrics}"
                break
            for kind in CHECKPOINT_KINDS:
                key, sign = _KIND_METRIC[kind]
                if sign * (metrics[key] - self.best[key]) > 0:
                    self.best[key] = metrics[key]
                    self.best["step" + key[len("val"):]] = self.step
                    folders.write_checkpoint(folders.checkpoint_dir(self.run_dir, kind), self.model, cfg, {**metrics, "kind": kind})
            self.elapsed = time.perf_counter() - t0
            metrics.update({f"best_{k}": self.best[k] for k in ("val_masked_loss", "val_unmasked_loss", "val_co_bps")},
                           elapsed_s=round(self.elapsed, 3))
            self.history.append(metrics)
            stop, why = self.should_stop()
            last = self.save_last()
            folders.write_progress(self.run_dir / contracts.PROGRESS_CSV, self.history)
            log.info("pass %d/%d  train %.4f  val masked %.4f  unmasked %.4f  co-bps %.4f  (best %.4f)  %.1f steps/s",
                     self.passes, t.max_passes, train_loss, metrics["val_masked_loss"], metrics["val_unmasked_loss"],
                     metrics["val_co_bps"], self.best["val_co_bps"], self.step / max(self.elapsed, 1e-9))
            if report is not None and report(metrics, last) and self.step < max_steps:
                # the caller (a search's scheduler) ends the run here; it ends as an early stop does
                status, message = contracts.STOPPED, f"stopped by the search's scheduler at pass {self.passes}"
                break
            if stop:
                status, message = contracts.EARLY_STOPPED, why
                break
        return status, message

    # -- resume state
    def save_last(self) -> Path:
        state = {
            "optimizer": self.optimizer.state_dict(), "step": self.step, "perm": self.perm.cpu(),
            "cursor": self.cursor, "best": dict(self.best), "history": list(self.history),
            "elapsed": self.elapsed, "rng_torch": torch.get_rng_state(), "rng_mask": self.mask_gen.get_state().cpu(),
            "rng_span": self.span_gen.get_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
        }

        def fill(tmp: Path):
            torch.save(self.model.state_dict(), tmp / contracts.MODEL_FILE)
            torch.save(state, tmp / "state.pt")
            save_config(self.cfg, tmp / RUN_CONFIG)

        path = self.run_dir / LAST_DIR
        folders.replace_dir(path, fill)
        return path

    def load_last(self, path: Path) -> None:
        try:
            self.model.load_state_dict(torch.load(path / contracts.MODEL_FILE, map_location=self.device, weights_only=True))
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
            self.optimizer.load_state_dict(state["optimizer"])
        except (OSError, RuntimeError, KeyError) as err:
            raise TrainError(f"cannot resume from {path}: {err}") from None
        self.step, self.cursor = int(state["step"]), int(state["cursor"])
        self.perm = state["perm"].to(self.device)
        self.best, self.history, self.elapsed = dict(state["best"]), list(state["history"]), float(state["elapsed"])
        torch.set_rng_state(state["rng_torch"])
        self.mask_gen.set_state(state["rng_mask"].to(self.mask_gen.get_state().device))
        if "rng_span" in state:
            self.span_gen.set_state(state["rng_span"])
        if self.device.type == "cuda" and state["rng_cuda"]:
            torch.cuda.set_rng_state_all(state["rng_cuda"])


def _write_rates(checkpoints: dict[str, Path], tensors: dict, test_tensors: dict | None) -> None:
    from .inference import write_checkpoint_rates

    for kind, folder in checkpoints.items():
        write_checkpoint_rates(folder, tensors, test_tensors)
    if test_tensors is None and checkpoints:
        log.info("no test-phase tensors: rates_test.h5 not written for %s", ", ".join(checkpoints))


def _finished(run_dir: Path, tensors: dict, test_tensors: dict | None) -> RunResult | None:
    """A run that already ended: its result, after writing any rates a crash left unwritten."""
    done = contracts.read_status(run_dir)
    if done.get("status") not in contracts.TERMINAL_STATUSES:
        return None
    kept = folders.kept_checkpoints(run_dir)
    _write_rates({k: p for k, p in kept.items() if not (p / RATES_VAL).is_file()
                  or (test_tensors is not None and not (p / RATES_TEST).is_file())}, tensors, test_tensors)
    return RunResult(done["status"], int(done["step"]), done.get("best", {}), kept, int(done.get("passes", 0)))


def _seed(cfg: RunConfig) -> None:
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % 2**32)
    random.seed(cfg.train.seed)


def train(config: RunConfig, run_dir: Path, *, report: Callable[[dict, Path | None], None] | None = None,
          tensors: dict | None = None, test_tensors: dict | None = None) -> RunResult:
    """Train one NDT in ``run_dir`` (resuming from ``run_dir/last`` if there); see the module docstring."""
    cfg = config
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    folders.recover_run_dir(run_dir)
    diffs = folders.config_differences(cfg, run_dir)
    if diffs:
        raise TrainError(f"{run_dir} holds a run with a different config ({', '.join(diffs)}); "
                         "use a fresh --run-dir or the same config")
    if tensors is None:  # before config.yaml: a run that fails on its data leaves its folder reusable
        tensors = load_phase(cfg, "val")
        if test_tensors is None:
            try:
                test_tensors = load_phase(cfg, "test")
            except TrainError as err:
                log.info("test-phase tensors unavailable (%s); test rates will be skipped", err)
    save_config(cfg, run_dir / RUN_CONFIG)
    done = _finished(run_dir, tensors, test_tensors)
    if done is not None:
        return done

    _seed(cfg)
    device = pick_device(cfg)
    run = _Run(cfg, run_dir, tensors, device)
    if (run_dir / LAST_DIR / "state.pt").is_file():
        run.load_last(run_dir / LAST_DIR)
        log.info("resumed %s at update %d", run_dir, run.step)
    log.info("NDT with %d parameters on %s; %d train / %d val trials", run.model.num_parameters(), device,
             run.train_counts.shape[0], run.val_counts.shape[0])
    folders.write_status(run_dir, contracts.RUNNING, run.step, run.best)
    status, message = run.fit(report)
    if status == contracts.DIVERGED:
        log.warning("run diverged: %s", message)
    kept = folders.kept_checkpoints(run_dir)
    best = {k: v for k, v in run.best.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    _write_rates(kept, tensors, test_tensors)
    folders.write_status(run_dir, status, run.step, best, message, passes=run.passes)
    return RunResult(status, run.step, best, kept, run.passes)
