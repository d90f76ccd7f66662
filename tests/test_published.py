"""Re-deriving a published ensemble from a fake of AE Studio's Zenodo 5875246 layout.

The fake mirrors what their validate_test_submission.py reads: ``<root>/<dataset>/models.csv``
(index column, ``trial_id``, ``val_ckpt``, ``co-bps``) and ``<trial_id>.<val_ckpt>.pth`` files that
are torch pickles holding a custom config object (theirs is a yacs CfgNode), so
``weights_only=True`` refuses them exactly as it refuses the real ones.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from nlbpipe import published as pub
from nlbpipe import submission as sub
from nlbpipe.rates import RATE_KEYS, save_rates

REPO = Path(__file__).resolve().parents[1]


class FakeCfgNode(dict):
    """Stands in for yacs.config.CfgNode: any non-allowlisted class makes the pickle unsafe to load."""


def make_published(root: Path, dataset: str, n: int = 10, extra_ids=(), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / dataset
    folder.mkdir(parents=True)
    ids = [f"{i:08x}" for i in rng.integers(0, 2**31, n)] + list(extra_ids)
    rows = []
    for i, trial_id in enumerate(ids):
        for val_ckpt in ("lve", "lfve"):
            rows.append({"trial_id": trial_id, "val_ckpt": val_ckpt, "co-bps": float(rng.uniform(0.2, 0.4)),
                         "vel R2": 0.9, "MODEL.DROPOUT": 0.1})
            state = {"state_dict": {"embedder.weight": torch.zeros(2, 2)}, "config": FakeCfgNode(VARIANT="x"),
                     "max_spikes": 7}
            torch.save(state, folder / f"{trial_id}.{val_ckpt}.pth")
    pd.DataFrame(rows).to_csv(folder / "models.csv")  # with the index column, as theirs
    return folder


def _ranked(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "models.csv", index_col=0, dtype={"trial_id": str}).sort_values("co-bps", ascending=False)


def test_members_are_the_top_n_of_models_csv(tmp_path):
    folder = make_published(tmp_path, "mc_maze_small")
    members = pub.published_members(tmp_path, "mc_maze_small")
    assert len(members) == pub.AESMTE3_ENSEMBLE_SIZES["mc_maze_small"] == 7
    top = _ranked(folder).head(7)
    assert [m.label for m in members] == [f"{t}.{v}" for t, v in zip(top.trial_id, top.val_ckpt)]
    assert [m.val_co_bps for m in members] == pytest.approx(list(top["co-bps"]))
    assert all(m.checkpoint.is_file() for m in members)
    assert [m.label for m in pub.published_members(folder, "mc_maze_small", size=3)] == [m.label for m in members[:3]]


def test_dmfc_rsg_swap_as_submitted(tmp_path):
    folder = make_published(tmp_path, "dmfc_rsg", n=8, extra_ids=["a6c8e99c", "91fde75c"])
    table = pd.read_csv(folder / "models.csv", index_col=0, dtype={"trial_id": str})
    table.loc[table.trial_id == "a6c8e99c", "co-bps"] = 0.99  # make it a member
    table.to_csv(folder / "models.csv")
    labels = [m.trial_id for m in pub.published_members(tmp_path, "dmfc_rsg")]
    assert "a6c8e99c" not in labels and labels[0] == "91fde75c"


def test_layout_problems_name_the_file(tmp_path):
    folder = make_published(tmp_path, "mc_maze_small")
    with pytest.raises(pub.PublishedFormatError, match="no models.csv"):
        pub.published_members(tmp_path, "mc_rtt")
    top = pub.published_members(tmp_path, "mc_maze_small")[0]
    top.checkpoint.unlink()
    with pytest.raises(pub.PublishedFormatError, match=f"missing: {top.checkpoint.name}"):
        pub.published_members(tmp_path, "mc_maze_small")
    pd.read_csv(folder / "models.csv", index_col=0).drop(columns="co-bps").to_csv(folder / "models.csv")
    with pytest.raises(pub.PublishedFormatError, match="lacks column.*co-bps"):
        pub.published_members(tmp_path, "mc_maze_small")
    with pytest.raises(pub.PublishedFormatError, match="no published AESMTE3 ensemble size"):
        make_published(tmp_path, "mc_maze_small_20")
        pub.published_members(tmp_path, "mc_maze_small_20")


def test_weights_only_refuses_their_pickles_and_the_error_says_what_to_do(tmp_path):
    make_published(tmp_path, "mc_maze_small")
    members = pub.published_members(tmp_path, "mc_maze_small")
    why = pub.inspect_checkpoint(members[0].checkpoint)
    assert why.startswith("refused by weights_only=True") and "FakeCfgNode" in why
    with pytest.raises(pub.PublishedFormatError) as err:
        pub.rederive_published(members)
    msg = str(err.value)
    assert "7 of 7 member(s) have no per-model test rates" in msg
    assert "weights_only=True" in msg and "get_output_rates" in msg and pub.RATES_SUFFIX in msg


def _write_member_rates(members, key: str, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    shapes = sub.shapes_from_registry(key)
    out = []
    for m in members:
        r = {k: rng.uniform(0.01, 0.5, s).astype(np.float32) for k, s in shapes.items()}
        save_rates(m.rates_test, r)
        out.append(r)
    return out


def test_rederive_from_per_model_rates_and_validate_cli(tmp_path, monkeypatch, capsys):
    from nlbpipe.settings import get_settings

    make_published(tmp_path, "mc_maze_small")
    members = pub.published_members(tmp_path, "mc_maze_small", size=2)
    rates = _write_member_rates(members, "mc_maze_small")
    mean = pub.rederive_published(members)
    for k in RATE_KEYS:
        np.testing.assert_allclose(mean[k], (rates[0][k].astype(np.float64) + rates[1][k]) / 2, rtol=1e-6)
    # their submission file: the numpy mean of the members, as their script computed it
    theirs = sub.write_submission(tmp_path / "mc_maze_small_submission.h5", "mc_maze_small",
                                  {k: np.stack([r[k] for r in rates]).mean(axis=0) for k in RATE_KEYS})
    monkeypatch.setenv("NLB_DATA_RAW", str(tmp_path / "no_data"))
    get_settings.cache_clear()
    spec = importlib.util.spec_from_file_location("validate_submission", REPO / "validate_submission.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        assert module.main(["mc_maze_small", str(theirs), "--published", str(tmp_path), "--size", "2"]) == 0
        out = capsys.readouterr().out
        assert "published checkpoints" in out and "MISMATCH" not in out and out.strip().endswith("PASSED")
        changed = tmp_path / "changed.h5"
        shutil.copy(theirs, changed)
        with h5py.File(changed, "r+") as f:
            f["mc_maze_small"]["train_rates_heldout"][0, 0, 0] += 0.01
        assert module.main(["mc_maze_small", str(changed), "--published", str(tmp_path), "--size", "2"]) == 1
        out = capsys.readouterr().out
        assert "MISMATCH" in next(x for x in out.splitlines() if "train_rates_heldout" in x)
        # without per-model rates: a usage error that explains the limit, not a traceback
        members[1].rates_test.unlink()
        assert module.main(["mc_maze_small", str(theirs), "--published", str(tmp_path), "--size", "2"]) == 2
    finally:
        get_settings.cache_clear()
