"""download_data.py --check: a dataset's files against the registry and what nlb_tools reads."""

from __future__ import annotations

import shutil

import pytest
from nwb_edit import copy_without

import download_data
from nlbpipe.check import check_dataset
from nlbpipe.datasets import DATASETS
from nlbpipe.synthetic import write_synthetic
from nlbpipe.tensors import DataFileError, load_tensors


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    root = tmp_path_factory.mktemp("check_standin")
    write_synthetic("mc_maze_small", root, seed=0, scale=0.05, targets=False)
    return root


def _edited(standin, tmp_path, **drop):
    info = DATASETS["mc_maze_small"]
    raw = tmp_path / "raw"
    shutil.copytree(standin, raw)
    src = info.train_path(raw)
    moved = src.with_name("orig.nwb.bak")
    src.rename(moved)
    copy_without(moved, src, **drop)
    moved.unlink()
    return raw, src


def _run_check(raw, monkeypatch, capsys, *names):
    monkeypatch.setenv("NLB_DATA_RAW", str(raw))
    from nlbpipe.settings import get_settings

    get_settings.cache_clear()
    rc = download_data.main(["--check", *names])
    return rc, capsys.readouterr()


def test_check_passes_on_a_whole_standin(standin, monkeypatch, capsys):
    rc, out = _run_check(standin, monkeypatch, capsys, "mc_maze_small")
    assert rc == 0, out.err
    assert "mc_maze_small: ok" in out.out
    assert "units 107 held-in / 35 held-out" in out.out
    assert "mc_maze_small_20 test: train_spikes_heldin (9, 35, 107)" in out.out


def test_check_names_a_removed_unit(standin, tmp_path, monkeypatch, capsys):
    raw, path = _edited(standin, tmp_path, drop_unit=141)  # the last held-out unit
    rc, out = _run_check(raw, monkeypatch, capsys, "mc_maze_small")
    assert rc == 1
    lines = [ln for ln in out.err.splitlines() if ln.startswith("mismatch:")]
    assert lines == [f"mismatch: mc_maze_small: {path}: units held-out 34, registry 35"]
    # and building tensors from such a file fails in one line naming it and both counts
    with pytest.raises(DataFileError, match=r"units held-out 34, registry 35"):
        load_tensors("mc_maze_small", "val", raw, tmp_path / "cache")


def test_check_names_a_dropped_trial_field(standin, tmp_path, monkeypatch, capsys):
    raw, path = _edited(standin, tmp_path, drop_trial_field="trial_version")
    rc, out = _run_check(raw, monkeypatch, capsys, "mc_maze_small")
    assert rc == 1
    assert f"mismatch: mc_maze_small: {path}: trials table lacks field 'trial_version'" in out.err


def test_check_names_a_missing_file(tmp_path, monkeypatch, capsys):
    rc, out = _run_check(tmp_path / "empty", monkeypatch, capsys, "area2_bump")
    assert rc == 1 and "file not found" in out.err and "desc-train" in out.err


def test_another_datasets_files_under_this_name_fail(tmp_path):
    """mc_maze_medium's files where mc_maze_small's belong: one line, file, expected and found."""
    medium, small = DATASETS["mc_maze_medium"], DATASETS["mc_maze_small"]
    src = tmp_path / "src"
    write_synthetic("mc_maze_medium", src, seed=0, scale=0.02, targets=False)
    raw = tmp_path / "raw"
    for a, b in ((medium.train_path(src), small.train_path(raw)), (medium.test_path(src), small.test_path(raw))):
        b.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(a, b)
    with pytest.raises(DataFileError) as err:
        load_tensors("mc_maze_small", "val", raw, tmp_path / "cache")
    msg = str(err.value)
    assert "\n" not in msg and str(small.train_path(raw)) in msg and "units held-in 114, registry 107" in msg
    report, bad = check_dataset("mc_maze_small", raw, tensors=False)
    assert any("units held-out 38, registry 35" in b for b in bad)
