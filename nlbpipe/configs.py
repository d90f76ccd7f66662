"""Templates → the run config and search space of each dataset key, written to CONFIG_DIR.

Templates are layered (``nlbpipe/templates/README.md``): ``base`` → ``bin20`` (20 ms keys only) →
``<dataset>`` → ``<dataset>_20`` (20 ms keys, if present), for the run config (``*.yaml``) and the
search space (``*.search.yaml``) alike. Each layer is checked on its own, so an error names the
template file that introduced it.

Generated files are the user's to edit: ``.generated.json`` beside them records the hash of what
was written, and a file whose content no longer matches (or that this tool never wrote) is not
overwritten without ``force``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .config import ConfigError, RunConfig, apply_overrides, config_from_dict
from .contracts import GENERATED_HASHES
from .datasets import all_keys, resolve
from .errors import NlbpipeError, SourcedError
from .fileio import write_json_atomic, write_text_atomic
from .search_space import SearchSpace, SearchSpaceError, space_from_dict

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"  # package data: there in any install
HASH_FILE = GENERATED_HASHES


class ConfigsEditedError(NlbpipeError, RuntimeError):
    """A generated file was edited by the user (or never generated); refusing to overwrite it."""


def _read_yaml(path: Path, error: type[SourcedError]) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise error("<file>", str(path), f"not valid YAML: {err}") from None


def template_layers(dataset_key: str, template_dir: Path = TEMPLATE_DIR, suffix: str = ".yaml") -> list[Path]:
    """The template files that make up a dataset key, most general first."""
    info, bin_ms = resolve(dataset_key)
    names = ["base"]
    if bin_ms != 5:
        names.append(f"bin{bin_ms}")
    names.append(info.name)
    if bin_ms != 5:
        names.append(dataset_key)
    paths = [Path(template_dir) / f"{n}{suffix}" for n in names]
    base = paths[0]
    if not base.is_file():
        raise FileNotFoundError(f"template {base} not found (template dir {template_dir})")
    return [p for p in paths if p.is_file()]


def _flatten(d: Any, source: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise ConfigError("<root>", source, f"expected a mapping of sections, got {type(d).__name__}")
    flat = {}
    for section, values in d.items():
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(str(section), source, f"expected a mapping, got {type(values).__name__}")
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def render_run_config(dataset_key: str, raw_dir: str | os.PathLike, cache_dir: str | os.PathLike,
                      template_dir: Path = TEMPLATE_DIR) -> RunConfig:
    """Merge the run-config layers of a dataset key and fill in its data section."""
    cfg = config_from_dict({}, "<defaults>")
    for path in template_layers(dataset_key, template_dir, ".yaml"):
        layer = _flatten(_read_yaml(path, ConfigError), str(path))
        for key in layer:
            if key.startswith("data."):
                raise ConfigError(key, str(path), "the data section is filled in by generate_configs.py")
        cfg = apply_overrides(cfg, layer, str(path))
    data = {"data.dataset": dataset_key, "data.raw_dir": str(raw_dir), "data.cache_dir": str(cache_dir)}
    return apply_overrides(cfg, data, "generate_configs.py")


def render_search_space(dataset_key: str, template_dir: Path = TEMPLATE_DIR) -> SearchSpace:
    """Merge the search-space layers: a later layer replaces a key's whole spec; ``key: null`` drops it."""
    merged: dict[str, Any] = {}
    layers = template_layers(dataset_key, template_dir, ".search.yaml")
    last_source = None
    for path in layers:
        d = _read_yaml(path, SearchSpaceError)
        if d is None:
            continue
        if not isinstance(d, Mapping):
            raise SearchSpaceError("<root>", str(path), "expected a mapping of dotted keys")
        kept = {k: v for k, v in d.items() if v is not None}
        if kept:
            space_from_dict(kept, str(path))  # checked layer by layer: errors name the file
        for key, spec in d.items():
            if spec is None:
                merged.pop(key, None)
            else:
                merged[key] = spec
        last_source = path
    if not merged:  # every layer empty (or nulled out): name the files that should have held the space
        raise SearchSpaceError("<root>", ", ".join(map(str, layers)), "the search space is empty")
    return space_from_dict(merged, str(last_source))


def _dump(d: Mapping, header: str, flow_leaves: bool) -> str:
    return header + yaml.safe_dump(dict(d), sort_keys=False, default_flow_style=None if flow_leaves else False)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def config_paths(dataset_key: str, config_dir: str | os.PathLike) -> tuple[Path, Path]:
    config_dir = Path(config_dir)
    return config_dir / f"{dataset_key}.yaml", config_dir / f"{dataset_key}.search.yaml"


def expand_keys(names: Iterable[str]) -> list[str]:
    """``[]`` or ``["all"]`` → all 14 keys; otherwise each name must be a dataset key."""
    names = list(names)
    if not names or names == ["all"]:
        return all_keys()
    keys = []
    for name in names:
        resolve(name)  # UnknownDatasetError names the key and lists the valid ones
        if name not in keys:
            keys.append(name)
    return keys


def generate(keys: Iterable[str], config_dir: str | os.PathLike, raw_dir: str | os.PathLike,
             cache_dir: str | os.PathLike, *, force: bool = False,
             template_dir: Path = TEMPLATE_DIR) -> list[Path]:
    """Write ``<key>.yaml`` and ``<key>.search.yaml`` for each key; returns the paths written.

    Everything is rendered and checked before anything is written, and every target is checked
    for user edits first, so a refusal leaves CONFIG_DIR exactly as it was.
    """
    config_dir = Path(config_dir)
    hashes_path = config_dir / HASH_FILE
    hashes = json.loads(hashes_path.read_text()) if hashes_path.is_file() else {}
    files: dict[Path, str] = {}
    for key in keys:
        cfg = render_run_config(key, raw_dir, cache_dir, template_dir)
        space = render_search_space(key, template_dir)
        config_path, space_path = config_paths(key, config_dir)
        header = f"# Generated by generate_configs.py from {template_dir}; edit freely (regenerate with --force).\n"
        files[config_path] = _dump(cfg.to_dict(), header, flow_leaves=False)
        files[space_path] = _dump(space.to_dict(), header, flow_leaves=True)
    edited = [p for p, text in files.items()
              if p.exists() and p.read_text() != text and hashes.get(p.name) != _sha(p.read_text())]
    if edited and not force:
        raise ConfigsEditedError(
            "refusing to overwrite edited config(s): " + ", ".join(map(str, edited))
            + " (they differ from what generate_configs.py last wrote; use --force to overwrite)")
    written = []
    for path, text in files.items():
        write_text_atomic(path, text)
        hashes[path.name] = _sha(text)
        written.append(path)
    write_json_atomic(hashes_path, hashes)
    return written
