"""generate_configs.py: templates → one run config and search space per dataset key, with the user's
edits protected and every template error named by key and file."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
import yaml

from nlbpipe.config import load_config
from nlbpipe.configs import TEMPLATE_DIR
from nlbpipe.datasets import all_keys
from nlbpipe.search_space import load_search_space

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("generate_configs", REPO / "generate_configs.py")
generate_configs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate_configs)


def test_every_dataset_key_gets_a_valid_config_and_search_space(nlb_home, capsys):
    assert generate_configs.main([]) == 0
    for key in all_keys():
        cfg = load_config(nlb_home.config_dir / f"{key}.yaml")
        space = load_search_space(nlb_home.config_dir / f"{key}.search.yaml")
        assert cfg.data.dataset == key
        assert Path(cfg.data.raw_dir) == nlb_home.data_raw and Path(cfg.data.cache_dir) == nlb_home.cache_dir
        dims = {d.key: d for d in space.dimensions}
        assert dims["train.lr"].sample_fn == "loguniform"
        assert (dims["model.dropout"].low, dims["model.dropout"].high) == (0.3, 0.7)
    five = {d.key: d for d in load_search_space(nlb_home.config_dir / "mc_maze.search.yaml").dimensions}
    twenty = {d.key: d for d in load_search_space(nlb_home.config_dir / "mc_maze_20.search.yaml").dimensions}
    assert (five["model.context_forward"].low, five["model.context_forward"].high) == (10, 101)
    assert twenty["model.context_forward"].high < five["model.context_forward"].high  # bins are 4x longer
    assert twenty["train.mask_max_span"].high < five["train.mask_max_span"].high
    assert load_config(nlb_home.config_dir / "dmfc_rsg.yaml").model.num_layers == 6  # per-dataset layer


def test_synthetic_points_raw_dir_at_the_stand_ins(nlb_home):
    assert generate_configs.main(["--synthetic", "mc_maze_small"]) == 0
    cfg = load_config(nlb_home.config_dir / "mc_maze_small.yaml")
    assert Path(cfg.data.raw_dir) == nlb_home.synthetic_raw
    assert not (nlb_home.config_dir / "mc_maze.yaml").exists()


def test_an_edited_config_is_kept_unless_forced(nlb_home, capsys):
    assert generate_configs.main(["mc_maze"]) == 0
    path = nlb_home.config_dir / "mc_maze.yaml"
    assert generate_configs.main(["mc_maze"]) == 0  # unchanged files regenerate quietly
    edited = path.read_text().replace("batch_size: 128", "batch_size: 96")
    assert edited != path.read_text()
    path.write_text(edited)
    assert generate_configs.main(["mc_maze"]) == 2
    assert "mc_maze.yaml" in capsys.readouterr().err and path.read_text() == edited
    assert generate_configs.main(["mc_maze", "--force"]) == 0
    assert load_config(path).train.batch_size == 128


def _bad_templates(tmp_path, name, text) -> Path:
    tdir = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, tdir)
    (tdir / name).write_text(text)
    return tdir


@pytest.mark.parametrize("name, text, key", [
    ("mc_maze.yaml", "model:\n  num_layer: 4\n", "model.num_layer"),
    ("mc_maze.search.yaml", "model.dropout: {sample_fn: uniform, low: 0.7, high: 0.3}\n", "model.dropout"),
    ("mc_maze.search.yaml", "train.lr: {sample_fn: loguniform, low: 0, high: 0.1}\n", "train.lr"),
    ("mc_maze.search.yaml", "train.lr: {sample_fn: gaussian, low: 0.1, high: 0.2}\n", "train.lr"),
    ("mc_maze.search.yaml", "model.activation: {sample_fn: choice}\n", "model.activation"),
])
def test_template_errors_name_key_and_file(nlb_home, tmp_path, capsys, name, text, key):
    tdir = _bad_templates(tmp_path, name, text)
    assert generate_configs.main(["mc_maze", "--template-dir", str(tdir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and key in err and str(tdir / name) in err
    assert not (nlb_home.config_dir / "mc_maze.yaml").exists()  # nothing half-written


def test_unknown_dataset_key_exits_2(nlb_home, capsys):
    assert generate_configs.main(["mc_mazee"]) == 2
    assert "mc_mazee" in capsys.readouterr().err


def test_templates_reproduce_the_2021_regularisation_ranges():
    base = yaml.safe_load((TEMPLATE_DIR / "base.search.yaml").read_text())
    for key in ("model.dropout", "model.dropout_rates", "model.dropout_embedding"):
        assert base[key] == {"sample_fn": "uniform", "low": 0.3, "high": 0.7}
    assert base["train.weight_decay"] == {"sample_fn": "loguniform", "low": 1e-8, "high": 1e-3}
    assert base["train.mask_max_span"] == {"sample_fn": "randint", "low": 1, "high": 8}  # 1..7 inclusive


def test_base_template_states_only_what_differs_from_the_defaults(nlb_home):
    """Defaults live in the config dataclasses; base.yaml repeats none of them."""
    from nlbpipe.config import RunConfig

    defaults = RunConfig().to_dict()
    base = yaml.safe_load((TEMPLATE_DIR / "base.yaml").read_text())
    for section, keys in base.items():
        for key, value in keys.items():
            assert value != defaults[section][key], f"base.yaml repeats the default {section}.{key}={value!r}"
    assert generate_configs.main(["mc_maze_small"]) == 0
    cfg = load_config(nlb_home.config_dir / "mc_maze_small.yaml")
    assert cfg.model.dropout == base["model"]["dropout"] and cfg.train.max_updates == base["train"]["max_updates"]
    assert cfg.model.num_layers == defaults["model"]["num_layers"]  # not in base.yaml: the dataclass default


def test_scripts_work_from_a_non_editable_install(tmp_path, nlb_home):
    """The templates are package data: generate_configs.py runs against a plain (copied) install."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    shutil.copytree(repo / "nlbpipe", src / "nlbpipe", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(repo / name, src / name)
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(src)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    assert (site / "nlbpipe" / "templates" / "base.yaml").is_file()
    shutil.rmtree(src)  # nothing of the checkout is left to find templates in
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(repo / "generate_configs.py", work / "generate_configs.py")
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run([sys.executable, "generate_configs.py", "mc_maze_small"], cwd=work, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    where = subprocess.run([sys.executable, "-c", "import nlbpipe.configs as c; print(c.TEMPLATE_DIR)"], cwd=work,
                           env=env, capture_output=True, text=True).stdout.strip()
    assert Path(where) == site / "nlbpipe" / "templates"  # the installed copy, not the checkout
    assert load_config(nlb_home.config_dir / "mc_maze_small.yaml").model.dropout == 0.5
