from pathlib import Path

from nlbpipe.settings import get_settings


def test_defaults_follow_nlb_home(monkeypatch, tmp_path):
    for var in ("NLB_DATA_RAW", "NLB_SYNTHETIC_RAW", "NLB_CACHE_DIR", "CONFIG_DIR", "RAY_TUNE_HOME",
                "NLB_SUBMISSIONS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NLB_HOME", str(tmp_path / "h"))
    get_settings.cache_clear()
    s = get_settings()
    home = tmp_path / "h"
    assert s.home == home
    assert s.data_raw == home / "raw"
    assert s.synthetic_raw == home / "synthetic"
    assert s.cache_dir == home / "processed"
    assert s.config_dir == home / "configs"
    assert s.results_dir == home / "ray_results"
    assert s.submissions_dir == home / "submissions"


def test_default_home_and_tilde(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NLB_HOME")
    monkeypatch.setenv("NLB_CACHE_DIR", "~/cache")
    get_settings.cache_clear()
    s = get_settings()
    assert s.home == tmp_path / "nlb_2021"
    assert s.cache_dir == tmp_path / "cache"


def test_each_variable_overrides_and_relative_paths_become_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NLB_DATA_RAW", "rel/raw")
    monkeypatch.setenv("RAY_TUNE_HOME", "/abs/ray")
    monkeypatch.setenv("NLB_SUBMISSIONS_DIR", str(tmp_path / "subs"))
    get_settings.cache_clear()
    s = get_settings()
    assert s.data_raw == tmp_path / "rel" / "raw" and s.data_raw.is_absolute()
    assert s.results_dir == Path("/abs/ray")
    assert s.submissions_dir == tmp_path / "subs"


def test_read_once_until_cache_clear(monkeypatch, tmp_path):
    first = get_settings()
    monkeypatch.setenv("NLB_HOME", str(tmp_path / "other"))
    assert get_settings() is first
    get_settings.cache_clear()
    assert get_settings().home == tmp_path / "other"


def test_nlb_home_fixture_isolates_every_path(nlb_home, tmp_path):
    for path in (nlb_home.data_raw, nlb_home.synthetic_raw, nlb_home.cache_dir, nlb_home.config_dir,
                 nlb_home.results_dir, nlb_home.submissions_dir):
        assert tmp_path in path.parents
