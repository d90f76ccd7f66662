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
    warmup_updates: int = 500
    lr_schedule: str = "cosine"
    grad_clip: float = 200.0
    max_updates: int = 5000
    val_interval: int = 20
    patience: int = 500
    mask_ratio: float = 0.25
    mask_mode: str = "timestep"
    mask_token_ratio: float = 0.8
    mask_random_ratio: float = 0.5
    mask_max_span: int = 1
    mask_span_ramp_start: int = 0
    mask_span_ramp_end: int = 0
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

# Allowed values and ranges, checked after types; each is (predicate, description).
_CHOICES = {
    "model.activation": ("relu", "gelu"),
    "model.embedding": ("identity", "linear", "count"),
    "model.position": ("learned", "sinusoidal"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.lr_schedule": ("cosine", "constant"),
    "train.mask_mode": ("timestep", "neuron"),
}
_RANGES = {
    "model.num_layers": (lambda v: v >= 1, "must be >= 1"),
    "model.num_heads": (lambda v: v >= 1, "must be >= 1"),
    "model.hidden_size": (lambda v: v >= 1, "must be >= 1"),
    "model.embed_dim": (lambda v: v >= 1, "must be >= 1"),
    "model.max_spike_count": (lambda v: v >= 1, "must be >= 1"),
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
    "train.warmup_updates": (lambda v: v >= 0, "must be >= 0"),
    "train.grad_clip": (lambda v: v > 0, "must be > 0"),
    "train.max_updates": (lambda v: v >= 1, "must be >= 1"),
    "train.val_interval": (lambda v: v >= 1, "must be >= 1"),
    "train.patience": (lambda v: v == -1 or v >= 1, "must be >= 1, or -1 for never"),
    "train.mask_ratio": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "train.mask_token_ratio": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "train.mask_random_ratio": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "train.mask_max_span": (lambda v: v >= 1, "must be >= 1"),
    "train.mask_span_ramp_start": (lambda v: v >= 0, "must be >= 0"),
    "train.mask_span_ramp_end": (lambda v: v >= 0, "must be >= 0"),
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
    if t.mask_span_ramp_end < t.mask_span_ramp_start:
        raise ConfigError("train.mask_span_ramp_end", source,
                          f"{t.mask_span_ramp_end} is before train.mask_span_ramp_start ({t.mask_span_ramp_start})")


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
