"""The main job end to end at a tiny size: the same scripts, in the same order, as `make demo`."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent


def _demo(home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NLB_", "RAY_TUNE_HOME", "CONFIG_DIR"))}
    env["NLB_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "nlbpipe.demo", "--size", "tiny"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_a_rerun_reuses_it(tmp_path):
    home = tmp_path / "home"
    first = _demo(home)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout

    # every stage ran, in order, through the user-facing scripts
    stages = ["download_data.py", "generate_configs.py", "run_hyperopt.py", "build_ensemble.py",
              "validate_submission.py"]
    positions = [out.index(f"$ 'python {s}'") for s in stages]
    assert positions == sorted(positions)
    assert "recompute" in out and "PASSED" in out

    # the closing table: five rows per phase, truth above the smoothing baseline on val co-bps
    table = (home / "submissions" / "mc_maze_small_20" / "demo" / "demo_table.txt").read_text().splitlines()
    rows = {(" ".join(line.split()[:-5]), line.split()[-5]): [float(x) for x in line.split()[-4:]] for line in table[1:]}
    assert sum(1 for _, phase in rows if phase == "val") == 5
    assert sum(1 for _, phase in rows if phase == "test") == 5
    assert rows[("ground truth", "val")][0] > rows[("smoothing baseline", "val")][0]

    # what the table is built from is on disk
    exp = home / "ray_results" / "mc_maze_small_20" / "demo"
    ranked = pd.read_csv(exp / "checkpoints.csv")
    assert ranked["trial_id"].nunique() == 4
    assert ranked["val_co_bps"].is_monotonic_decreasing
    record = json.loads((home / "submissions" / "mc_maze_small_20" / "demo" / "ensemble.json").read_text())
    assert record["members"] and Path(record["files"]["submission"]).is_file()
    for printed in ("checkpoints.csv", "search_progress.png", "ensemble_curve.png"):
        assert printed in out

    # a rerun trains nothing new: same trials, same ranking
    second = _demo(home)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "--resume" in second.stdout
    again = pd.read_csv(exp / "checkpoints.csv")
    assert sorted(again["trial_id"]) == sorted(ranked["trial_id"])
    assert again["val_co_bps"].tolist() == pytest.approx(ranked["val_co_bps"].tolist())


def test_demo_of_another_size_under_the_same_home_is_refused(tmp_path):
    from nlbpipe.synthetic import write_synthetic

    root = tmp_path / "synthetic"  # NLB_SYNTHETIC_RAW's default under NLB_HOME
    paths = write_synthetic("mc_maze_small", root, seed=0, scale=0.05, targets=False)
    stamps = [p.stat().st_mtime_ns for p in paths]
    proc = _demo(tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "scale 0.05" in lines[0] and "NLB_HOME" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert [p.stat().st_mtime_ns for p in paths] == stamps  # nothing rewritten


def test_demo_config_cuts_the_template_to_the_demo_recipe(tmp_path):
    """The demo's search space is the template's with the demo's ranges, and its fixed settings
    are no longer searched: what README's "The demo" says the recipe is."""
    from nlbpipe import configs, demo
    from nlbpipe.config import load_config
    from nlbpipe.search_space import load_search_space, search_space_path

    config, _ = configs.generate(["mc_maze_small_20"], tmp_path / "configs", tmp_path / "raw", tmp_path / "cache")
    template_space = load_search_space(search_space_path(config)).to_dict()
    size = demo.SIZES["full"]
    demo_config = demo.write_demo_config(config, tmp_path, size)
    space = load_search_space(search_space_path(demo_config)).to_dict()
    cfg = load_config(demo_config)

    assert cfg.train.max_passes == size.max_passes and cfg.train.patience_passes == size.patience_passes
    assert cfg.train.early_stop == size.early_stop and cfg.model.num_layers == 2
    # the templates start as the 2021 NDT did; the demo's high learning rates need nlbpipe's start
    template = load_config(config)
    assert (template.model.init, template.model.readout_bias) == ("ndt2021", "zero")
    assert (cfg.model.init, cfg.model.readout_bias) == ("nlbpipe", "mean_rate")
    for key, searched in (("model.dropout", size.dropout), ("model.dropout_embedding", size.dropout),
                          ("model.dropout_rates", size.dropout_rates)):
        assert (space[key]["low"], space[key]["high"]) == searched
    assert (space["train.lr"]["low"], space["train.lr"]["high"]) == size.lr
    assert (space["train.mask_token_ratio"]["low"], space["train.mask_token_ratio"]["high"]) == size.mask_token_ratio
    assert (space["train.mask_ratio"]["low"], space["train.mask_ratio"]["high"]) == size.mask_ratio
    assert "model.input_smooth_ms" not in template_space  # the 2021 search reads raw counts
    assert (space["model.input_smooth_ms"]["low"], space["model.input_smooth_ms"]["high"]) == size.input_smooth_ms
    raw = demo.write_demo_config(config, tmp_path / "raw_counts", dataclasses.replace(size, input_smooth_ms=(0, 0)))
    assert "model.input_smooth_ms" not in load_search_space(search_space_path(raw)).to_dict()
    assert 0 < space["train.warmup_passes"]["low"] < space["train.warmup_passes"]["high"] <= size.max_passes // 4 + 1
    assert not set(space) & set(demo.DEMO_SETTINGS)
    untouched = set(template_space) - {"train.lr", "train.mask_token_ratio", "train.mask_ratio", "train.warmup_passes",
                                       "model.dropout", "model.dropout_rates", "model.dropout_embedding"}
    assert untouched and all(space[k] == template_space[k] for k in untouched)
