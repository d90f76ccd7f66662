"""The run config of one NDT training run: three typed sections, YAML in and out, dotted overrides.

The keys and defaults are the contract with the search (docs/architecture.md): a search space names
the same dotted keys (``model.dropout``), and every trial's resolved config is saved beside its
checkpoints, so a bad key must fail loudly at load time, naming the key and the file, not deep inside
a trial an hour later.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .errors import SourcedError
from .fileio import write_text_atomic
from .ndt.config import ModelConfig


class ConfigError(SourcedError):
    """A run-config problem; the message names the key and the file (or override source) at fault."""


@dataclass
class DataConfig:
    dataset: str = "mc_maze_small"
    raw_dir: str = ""
    cache_dir: str = ""


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    batch_size: int = 64
    lr: float = 1.0e-3
    weight_decay: float = 5.0e-5
    # Training length counts passes over the training trials, as the 2021 NDT's "updates" did (one
    # pass = ceil(train trials / batch_size) optimizer steps), so a value means the same at any batch
    # size. Defaults: the 2021 NDT's own (src/config/default.py), validation every 10 passes.
    warmup_passes: int = 1000
    lr_schedule: str = "cosine"
    grad_clip: float = 200.0
    max_passes: int = 10000
    val_interval_passes: int = 10
    patience_passes: int = 750
    # the val metric(s) patience watches: masked_loss (2021) | co_bps | both (STNDT: stop only when
    # neither improved; never stops before either alone would, so the co-bps and masked-loss
    # checkpoints both see their best). Measured: no difference on demo-sized runs (README).
    early_stop: str = "both"
    val_mask: str = "fixed"  # the val masked loss's mask: the same at every validation, or fresh (2021)
    mask_ratio: float = 0.25
    mask_mode: str = "timestep"
    mask_token_ratio: float = 0.8
    mask_random_ratio: float = 0.5
    mask_max_span: int = 1
    # spans (width drawn per batch from 1..mask_max_span) are used with a probability ramped from 0 at
    # the start to 1 at the end; start == end switches them on at once
    mask_span_ramp_start_passes: int = 0
    mask_span_ramp_end_passes: int = 0
    # Added beyond the architecture contract (all default to "no change in behaviour"):
    num_threads: int = 0  # torch intra-op threads on CPU; 0 = leave torch's default
    # Gradient accumulation: a batch is run in chunks of this many trials (0 = whole batch); the
    # update is the same, the activation memory is that of a chunk.
    micro_batch_size: int = 16


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}

# Keys that counted minibatch steps before training length was counted in passes: refused by name,
# so an old config cannot silently train 5-27x longer or shorter than it used to.
_RENAMED = {
    "train.max_updates": "train.max_passes",
    "train.warmup_updates": "train.warmup_passes",
    "train.patience": "train.patience_passes",
    "train.val_interval": "train.val_interval_passes",
    "train.mask_span_ramp_start": "train.mask_span_ramp_start_passes",
    "train.mask_span_ramp_end": "train.mask_span_ramp_end_passes",
}


def renamed_key_error(dotted: str, source: str) -> ConfigError:
    return ConfigError(dotted, source, f"renamed to {_RENAMED[dotted]}: training length now counts passes over "
                                       "the training trials, not minibatch steps (convert: steps x batch_size / train trials)")

# Allowed values and ranges, checked after types; each is (predicate, description).
_CHOICES = {
    "model.activation": ("relu", "gelu"),
    "model.embedding": ("identity", "linear", "count"),
    "model.position": ("learned", "sinusoidal"),
    "model.init": ("nlbpipe", "ndt2021"),
    "model.readout_bias": ("mean_rate", "zero"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.lr_schedule": ("cosine", "constant"),
    "train.mask_mode": ("timestep", "neuron", "full"),
    "train.early_stop": ("masked_loss", "co_bps", "both"),
    "train.val_mask": ("fixed", "fresh"),
}
_RANGES = {
    "model.num_layers": (lambda v: v >= 1, "must be >= 1"),
    "model.num_heads": (lambda v: v >= 1, "must be >= 1"),
    "model.hidden_size": (lambda v: v >= 1, "must be >= 1"),
    "model.embed_dim": (lambda v: v >= 1, "must be >= 1"),
    "model.max_spike_count": (lambda v: v >= 1, "must be >= 1"),
    "model.factor_dim": (lambda v: v >= 0, "must be >= 1, or 0 for no factors (the read-out from the width)"),
    "model.input_smooth_ms": (lambda v: v >= 0, "must be >= 0 (0 = raw counts)"),
    "model.dropout": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "model.dropout_rates": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "model.dropout_embedding": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "model.context_forward": (lambda v: v >= -1, "must be >= 0, or -1 for full context"),
    "model.context_backward": (lambda v: v >= -1, "must be >= 0, or -1 for full context"),
    "data.dataset": (lambda v: bool(v), "must not be empty"),
    "train.batch_size": (lambda v: v >= 1, "must be >= 1"),
    "train.micro_batch_size": (lambda v: v >= 0, "must be >= 1, or 0 for the whole batch"),
    "train.lr": (lambda v: v > 0, "must be > 0"),
    "train.weight_decay": (lambda v: v >= 0, "must be >= 0"),
    "train.warmup_passes": (lambda v: v >= 0, "must be >= 0"),
    "train.grad_clip": (lambda v: v > 0, "must be > 0"),
    "train.max_passes": (lambda v: v >= 1, "must be >= 1"),
    "train.val_interval_passes": (lambda v: v >= 1, "must be >= 1"),
    "train.patience_passes": (lambda v: v == -1 or v >= 1, "must be >= 1, or -1 for never"),
    "train.mask_ratio": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "train.mask_token_ratio": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "train.mask_random_ratio": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "train.mask_max_span": (lambda v: v >= 1, "must be >= 1"),
    "train.mask_span_ramp_start_passes": (lambda v: v >= 0, "must be >= 0"),
    "train.mask_span_ramp_end_passes": (lambda v: v >= 0, "must be >= 0"),
    "train.num_threads": (lambda v: v >= 0, "must be >= 0 (0 = torch default)"),
}


def _field_types(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: type, key: str, source: str) -> Any:
    """Accept a value of the field's type; ints are fine where floats are expected, nothing else converts."""
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
    raise ConfigError(key, source, f"expected {typ.__name__}, got {value!r} ({type(value).__name__})")


def _check(key: str, value: Any, source: str) -> None:
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(key, source, f"{value!r} is not one of {', '.join(_CHOICES[key])}")
    if key in _RANGES:
        ok, why = _RANGES[key]
        if not ok(value):
            raise ConfigError(key, source, f"{value!r} {why}")


def _check_run(cfg: RunConfig, source: str) -> None:
    t = cfg.train
    if t.mask_span_ramp_end_passes < t.mask_span_ramp_start_passes:
        raise ConfigError("train.mask_span_ramp_end_passes", source,
                          f"{t.mask_span_ramp_end_passes} is before train.mask_span_ramp_start_passes "
                          f"({t.mask_span_ramp_start_passes})")


def config_from_dict(d: Mapping, source: str = "<dict>") -> RunConfig:
    """Build a checked RunConfig; missing keys take their defaults, unknown ones are errors."""
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise ConfigError("<root>", source, f"expected a mapping of sections, got {type(d).__name__}")
    for name in d:
        if name not in _SECTIONS:
            raise ConfigError(str(name), source, f"unknown section (expected one of {', '.join(_SECTIONS)})")
    sections = {}
    for name, cls in _SECTIONS.items():
        given = d.get(name) or {}
        if not isinstance(given, Mapping):
            raise ConfigError(name, source, f"expected a mapping, got {type(given).__name__}")
        types = _field_types(cls)
        values = {}
        for key, value in given.items():
            dotted = f"{name}.{key}"
            if dotted in _RENAMED:
                raise renamed_key_error(dotted, source)
            if key not in types:
                raise ConfigError(dotted, source, f"unknown key (known: {', '.join(types)})")
            value = _coerce(value, types[key], dotted, source)
            _check(dotted, value, source)
            values[key] = value
        sections[name] = cls(**values)
    cfg = RunConfig(**sections)
    _check_run(cfg, source)
    return cfg


def _parse_override(item: str, source: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(item, source, "expected section.key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(key.strip(), source, f"cannot parse value {raw!r}: {err}") from None
    return key.strip(), value


def apply_overrides(cfg: RunConfig, overrides: Mapping[str, Any] | Sequence[str], source: str = "--set") -> RunConfig:
    """Return a new config with dotted keys replaced; strings "k=v" have their values parsed as YAML scalars."""
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = [_parse_override(o, source) for o in overrides]
    d = cfg.to_dict()
    for key, value in items:
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in _SECTIONS:
            raise ConfigError(key, source, "expected section.key with section one of " + ", ".join(_SECTIONS))
        section, name = parts
        if key in _RENAMED:
            raise renamed_key_error(key, source)
        if name not in _field_types(_SECTIONS[section]):
            raise ConfigError(key, source, "unknown key")
        d[section][name] = value
    return config_from_dict(d, source)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("<file>", str(path), "config file not found")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError("<file>", str(path), f"not valid YAML: {err}") from None
    cfg = config_from_dict(d, str(path))
    return apply_overrides(cfg, overrides) if overrides else cfg


def save_config(cfg: RunConfig, path: str | os.PathLike) -> None:
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
