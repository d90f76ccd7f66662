"""Run config: the architecture doc's keys and defaults, and errors that name the key and the file."""

import re
from pathlib import Path

import pytest
import yaml

from nlbpipe.config import ConfigError, RunConfig, apply_overrides, config_from_dict, load_config, save_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_defaults_are_the_architecture_contract():
    text = DOC.read_text()
    block = re.search(r"## Run config.*?```yaml\n(.*?)```", text, re.S).group(1)
    documented = yaml.safe_load(block)
    defaults = RunConfig().to_dict()
    for section, keys in documented.items():
        for key, value in keys.items():
            if section == "data" and key in ("raw_dir", "cache_dir"):
                continue  # examples of paths, resolved per machine
            assert key in defaults[section], f"{section}.{key} documented but not implemented"
            assert defaults[section][key] == value, f"{section}.{key}: default {defaults[section][key]!r} != doc {value!r}"
    # and every documented key parses back to the same config
    assert config_from_dict(documented, "doc").to_dict()["train"] == defaults["train"]


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  num_layer: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "model.num_layer" in str(err.value) and str(path) in str(err.value)
    assert err.value.key == "model.num_layer" and err.value.source == str(path)


@pytest.mark.parametrize("section, key, value, why", [
    ("train", "lr", "fast", "expected float"),
    ("model", "num_layers", 2.5, "expected int"),
    ("model", "pre_norm", "yes please", "expected bool"),
    ("model", "activation", "tanh", "not one of"),
    ("model", "dropout", 1.5, "[0, 1)"),
    ("model", "factor_dim", -1, ">= 1, or 0"),
    ("model", "input_smooth_ms", -5.0, ">= 0"),
    ("train", "patience_passes", 0, ">= 1"),
    ("train", "mask_mode", "spans", "not one of"),
    ("train", "early_stop", "val_loss", "not one of"),
])
def test_bad_values_name_key_and_file(tmp_path, section, key, value, why):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({section: {key: value}}))
    with pytest.raises(ConfigError, match=re.escape(why)) as err:
        load_config(path)
    assert f"{section}.{key}" in str(err.value) and str(path) in str(err.value)


def test_unknown_section_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="optim"):
        config_from_dict({"optim": {}}, "x.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_parse_yaml_scalars(tmp_path):
    path = tmp_path / "run.yaml"
    save_config(RunConfig(), path)
    cfg = load_config(path, ["train.lr=1e-4", "model.pre_norm=false", "model.num_layers=6", "data.dataset=mc_rtt"])
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model.pre_norm is False and cfg.model.num_layers == 6 and cfg.data.dataset == "mc_rtt"
    cfg2 = apply_overrides(cfg, {"model.dropout": 0.3, "train.lr": 2})  # a searcher hands Python values
    assert cfg2.model.dropout == 0.3 and cfg2.train.lr == 2.0 and cfg.model.dropout == 0.2


@pytest.mark.parametrize("item, key", [("train.lrate=1", "train.lrate"), ("lr=1", "lr"), ("train.lr", "train.lr"),
                                       ("model.num_heads=two", "model.num_heads")])
def test_bad_overrides_name_the_key_and_flag(item, key):
    with pytest.raises(ConfigError) as err:
        apply_overrides(RunConfig(), [item])
    assert key in str(err.value) and "--set" in str(err.value)


def test_save_load_round_trip(tmp_path):
    cfg = apply_overrides(RunConfig(), {"model.embedding": "count", "train.mask_max_span": 3,
                                        "train.mask_span_ramp_end_passes": 100, "train.mask_mode": "full", "train.early_stop": "both", "data.raw_dir": "/data/raw"})
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert yaml.safe_load((tmp_path / "c.yaml").read_text()) == cfg.to_dict()


def test_span_ramp_order_checked():
    with pytest.raises(ConfigError, match="train.mask_span_ramp_end_passes"):
        config_from_dict({"train": {"mask_span_ramp_start_passes": 100, "mask_span_ramp_end_passes": 10}}, "r.yaml")


@pytest.mark.parametrize("old, new", [("max_updates", "max_passes"), ("warmup_updates", "warmup_passes"),
                                      ("patience", "patience_passes"), ("val_interval", "val_interval_passes"),
                                      ("mask_span_ramp_start", "mask_span_ramp_start_passes"),
                                      ("mask_span_ramp_end", "mask_span_ramp_end_passes")])
def test_step_counted_keys_are_refused_with_their_new_name(tmp_path, old, new):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"train": {old: 100}}))
    with pytest.raises(ConfigError, match=f"renamed to train.{new}") as err:
        load_config(path)
    assert f"train.{old}" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ConfigError, match=f"train.{old}.*renamed to train.{new}"):
        apply_overrides(RunConfig(), [f"train.{old}=100"])


def test_a_templates_budget_and_patience_mean_the_same_passes_at_any_batch_size(tmp_path):
    """The template's training length, run at batch 16 and at 64: the same passes over the trials,
    a quarter of the optimizer steps. Budget and patience scaled down from the template by one factor,
    then trained (lr so small nothing improves, so patience ends both runs)."""
    from test_train import toy_tensors

    from nlbpipe.configs import render_run_config
    from nlbpipe.ndt.train import steps_per_pass, train

    t = render_run_config("mc_maze_small", tmp_path, tmp_path).train
    assert (t.max_passes, t.patience_passes, t.warmup_passes) == (50501, 2000, 2000)  # the 2021 config's
    factor = 250
    ran = {}
    for batch in (16, 64):
        cfg = apply_overrides(RunConfig(), {
            "train.batch_size": batch, "train.max_passes": t.max_passes // factor,
            "train.patience_passes": t.patience_passes // factor, "train.val_interval_passes": 2,
            "train.warmup_passes": 0, "train.lr": 1e-12, "train.num_threads": 1, "model.num_layers": 1,
            "model.hidden_size": 16})
        tensors = toy_tensors(n_train=64, n_val=8)
        ran[batch] = train(cfg, tmp_path / f"b{batch}", tensors=tensors)
        assert ran[batch].step == ran[batch].passes * steps_per_pass(64, batch)
    assert ran[16].status == ran[64].status == "early_stopped"
    assert ran[16].passes == ran[64].passes == 2 + t.patience_passes // factor  # best at the first validation
    assert ran[16].step == 4 * ran[64].step
