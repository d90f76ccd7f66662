"""The search space of a hyperparameter search: which run-config keys vary, and over what.

A search-space YAML maps a dotted run-config key to a distribution::

    model.dropout: {sample_fn: uniform, low: 0.3, high: 0.7}
    train.lr: {sample_fn: loguniform, low: 1.0e-5, high: 5.0e-3}
    train.mask_max_span: {sample_fn: randint, low: 1, high: 8}      # high exclusive, as in Ray Tune
    model.activation: {sample_fn: choice, opts: [relu, gelu]}

``randint`` follows Ray Tune's ``tune.randint``: ``high`` is exclusive. scikit-optimize's
``Integer`` is inclusive, so the mapping to skopt subtracts one; getting this wrong silently
searches a value the user excluded.  Every check names the key and the file, because a typo in a
search space otherwise surfaces as a crashed trial hours into a search.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import SourcedError

SAMPLE_FNS = ("uniform", "loguniform", "randint", "choice")


class SearchSpaceError(SourcedError):
    """A search-space problem; the message names the key and the file at fault."""


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter; ``high`` is exclusive for randint (Tune's convention)."""

    key: str
    sample_fn: str
    low: float | int | None = None
    high: float | int | None = None
    opts: tuple | None = None

    def to_dict(self) -> dict:
        if self.sample_fn == "choice":
            return {"sample_fn": "choice", "opts": list(self.opts)}
        return {"sample_fn": self.sample_fn, "low": self.low, "high": self.high}

    def skopt(self):
        """The scikit-optimize dimension covering exactly the same values."""
        from skopt.space import Categorical, Integer, Real

        if self.sample_fn == "uniform":
            return Real(float(self.low), float(self.high), prior="uniform", name=self.key)
        if self.sample_fn == "loguniform":
            return Real(float(self.low), float(self.high), prior="log-uniform", name=self.key)
        if self.sample_fn == "randint":
            return Integer(int(self.low), int(self.high) - 1, name=self.key)
        return Categorical(list(self.opts), name=self.key)

    def tune(self):
        """The Ray Tune sampler (for random search and for Tune's own records)."""
        from ray import tune

        if self.sample_fn == "uniform":
            return tune.uniform(self.low, self.high)
        if self.sample_fn == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.sample_fn == "randint":
            return tune.randint(self.low, self.high)
        return tune.choice(list(self.opts))

    def to_python(self, value: Any) -> Any:
        """Plain Python scalars (skopt hands back numpy types, which YAML and JSON refuse)."""
        if hasattr(value, "item"):
            value = value.item()
        if self.sample_fn == "randint":
            return int(value)
        if self.sample_fn in ("uniform", "loguniform"):
            return float(value)
        return value


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]
    source: str = "<dict>"

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.dimensions]

    def __len__(self) -> int:
        return len(self.dimensions)

    def skopt_dimensions(self) -> list:
        return [d.skopt() for d in self.dimensions]

    def tune_param_space(self) -> dict:
        return {d.key: d.tune() for d in self.dimensions}

    def to_dict(self) -> dict:
        return {d.key: d.to_dict() for d in self.dimensions}

    def point_to_config(self, x) -> dict:
        """An skopt point (list in dimension order) → ``{dotted key: plain value}``."""
        return {d.key: d.to_python(v) for d, v in zip(self.dimensions, x)}

    def config_to_point(self, config: Mapping) -> list:
        missing = [k for k in self.keys if k not in config]
        if missing:
            raise SearchSpaceError(missing[0], self.source, "missing from the trial's parameters")
        return [d.to_python(config[d.key]) for d in self.dimensions]


def _number(value: Any, key: str, field: str, source: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SearchSpaceError(key, source, f"{field} must be a finite number, got {value!r}")
    return value


def parse_dimension(key: str, spec: Any, source: str, known_keys=None) -> Dimension:
    if not isinstance(key, str) or key.count(".") != 1:
        raise SearchSpaceError(str(key), source, "expected a dotted run-config key such as model.dropout")
    if known_keys is not None and key not in known_keys:
        raise SearchSpaceError(key, source, "not a run-config key")
    if not isinstance(spec, Mapping):
        raise SearchSpaceError(key, source, f"expected a mapping with sample_fn, got {spec!r}")
    extra = set(spec) - {"sample_fn", "low", "high", "opts"}
    if extra:
        raise SearchSpaceError(key, source, f"unknown field(s) {', '.join(sorted(map(str, extra)))}")
    fn = spec.get("sample_fn")
    if fn not in SAMPLE_FNS:
        raise SearchSpaceError(key, source, f"sample_fn {fn!r} is not one of {', '.join(SAMPLE_FNS)}")
    if fn == "choice":
        opts = spec.get("opts")
        if not isinstance(opts, (list, tuple)) or not opts:
            raise SearchSpaceError(key, source, "choice needs a non-empty list `opts`")
        if len(set(map(repr, opts))) != len(opts):
            raise SearchSpaceError(key, source, f"opts has repeated values: {list(opts)}")
        return Dimension(key, fn, opts=tuple(opts))
    if "opts" in spec:
        raise SearchSpaceError(key, source, f"opts is only for choice, not {fn}")
    for field in ("low", "high"):
        if field not in spec:
            raise SearchSpaceError(key, source, f"{fn} needs `{field}`")
    low = _number(spec["low"], key, "low", source)
    high = _number(spec["high"], key, "high", source)
    if low >= high:
        raise SearchSpaceError(key, source, f"low ({low}) must be below high ({high})")
    if fn == "loguniform" and low <= 0:
        raise SearchSpaceError(key, source, f"loguniform needs low > 0, got {low}")
    if fn == "randint":
        if not (float(low).is_integer() and float(high).is_integer()):
            raise SearchSpaceError(key, source, f"randint bounds must be integers, got {low}, {high}")
        low, high = int(low), int(high)
    else:
        low, high = float(low), float(high)
    return Dimension(key, fn, low=low, high=high)


def _run_config_keys() -> set[str]:
    from .config import RunConfig

    return {f"{section}.{key}" for section, values in RunConfig().to_dict().items() for key in values}


def space_from_dict(d: Any, source: str = "<dict>", check_keys: bool = True) -> SearchSpace:
    """Parse and check a search space; with ``check_keys`` every key must be a run-config key."""
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise SearchSpaceError("<root>", source, f"expected a mapping of dotted keys, got {type(d).__name__}")
    known = _run_config_keys() if check_keys else None
    dims = tuple(parse_dimension(k, v, source, known) for k, v in d.items())
    if not dims:
        raise SearchSpaceError("<root>", source, "the search space is empty")
    return SearchSpace(dims, str(source))


def load_search_space(path: str | os.PathLike) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError("<file>", str(path), "search-space file not found")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SearchSpaceError("<file>", str(path), f"not valid YAML: {err}") from None
    return space_from_dict(d, str(path))


def search_space_path(config_path: str | os.PathLike) -> Path:
    """``configs/mc_maze.yaml`` → ``configs/mc_maze.search.yaml``: the space lives beside its config."""
    config_path = Path(config_path)
    return config_path.with_name(config_path.name.removesuffix(".yaml") + ".search.yaml")
