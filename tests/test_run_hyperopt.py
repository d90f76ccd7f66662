"""run_hyperopt.py end to end on a scaled-down synthetic mc_maze_small: a real Ray Tune search with
the skopt searcher, then the ranked checkpoint table; and a driver killed with SIGKILL mid-search that
``--resume`` finishes without repeating a finished trial.

The tests that start Ray and train real (tiny) NDTs are the slow ones of the suite (marked
``slow``): a FIFO search, a killed and resumed one, an ASHA search whose stopped trials are ranked
and ensembled, and a driver ended by SIGTERM/SIGHUP; the others check that bad requests fail before
Ray starts (more in test_bad_input.py). The driver runs as a subprocess so every Ray process it
starts dies with it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from nlbpipe.config import load_config
from nlbpipe.contracts import STOP_REQUESTED, TRIAL_ERROR_JSON

REPO = Path(__file__).resolve().parent.parent
TINY = ["--set", "train.max_passes=10", "--set", "train.val_interval_passes=5", "--set", "model.num_layers=1",
        "--set", "model.hidden_size=16", "--set", "train.batch_size=8", "--set", "train.num_threads=1"]
FINAL = {"completed", "early_stopped", "stopped", "diverged"}


@pytest.fixture
def configured(small_synthetic, nlb_home, monkeypatch):
    """CONFIG_DIR/mc_maze_small.yaml generated from the templates, pointing at the synthetic data."""
    monkeypatch.setenv("NLB_SYNTHETIC_RAW", str(small_synthetic.raw_dir))
    monkeypatch.setenv("NLB_CACHE_DIR", str(small_synthetic.cache_dir))
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    out = subprocess.run([sys.executable, str(REPO / "generate_configs.py"), "--synthetic", "mc_maze_small"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return Path(nlb_home.results_dir) / "mc_maze_small"


def _command(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "run_hyperopt.py"), "mc_maze_small", "--num-cpus", "2", "--quiet",
            "--n-initial-points", "2", *args]


def _finished_trials(exp_dir: Path) -> dict[str, dict]:
    done = {}
    for status_file in exp_dir.glob("trial_*/run/status.json"):
        try:
            status = json.loads(status_file.read_text())
        except ValueError:
            continue
        if status.get("status") in FINAL:
            done[status_file.parent.parent.name] = status
    return done


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and every process it started (by pid), as a crash or `kill -9` would."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)


@pytest.mark.slow
def test_search_ranks_every_kept_checkpoint_of_distinct_trials(configured):
    out = subprocess.run(_command("--samples", "6", "--max-concurrent", "2", *TINY),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    exp_dir = configured / "mc_maze_small_hyperopt"

    trials = sorted(exp_dir.glob("trial_*"))
    assert len(trials) == 6
    params = [json.loads((t / "params.json").read_text()) for t in trials]
    assert len({json.dumps(p, sort_keys=True) for p in params}) == 6  # six different configurations
    assert all(set(p) == set(params[0]) and "train.lr" in p for p in params)
    assert len(_finished_trials(exp_dir)) == 6

    kept = sorted(p for p in exp_dir.glob("trial_*/run/checkpoints/*") if (p / "model.pt").is_file())
    table = pd.read_csv(exp_dir / "checkpoints.csv")
    assert len(table) == len(kept) >= 6
    assert sorted(exp_dir / d for d in table["checkpoint_dir"]) == kept
    assert table["val_co_bps"].notna().all() and table["val_vel_r2"].notna().all()
    assert list(table["val_co_bps"]) == sorted(table["val_co_bps"], reverse=True)
    assert {"trial_id", "kind", "hp/train.lr", "hp/model.dropout"} <= set(table.columns)
    # the table's hyperparameters are the ones each trial trained with
    for _, row in table.iterrows():
        cfg = load_config(exp_dir / row["checkpoint_dir"] / "config.yaml")
        assert cfg.train.lr == pytest.approx(row["hp/train.lr"]) and cfg.train.max_passes == 10
        assert cfg.model.context_forward == row["hp/model.context_forward"]
    assert (exp_dir / "search_progress.png").stat().st_size > 1000

    again = subprocess.run(_command("--samples", "6", *TINY), capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr  # no silent second search in the folder


@pytest.mark.slow
def test_killed_search_resumes_to_exactly_the_planned_trials(configured):
    samples = 4
    exp_dir = configured / "mc_maze_small_hyperopt"
    proc = subprocess.Popen(_command("--samples", str(samples), "--max-concurrent", "2", *TINY),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 400
        while len(_finished_trials(exp_dir)) < 2:
            assert proc.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.5)
    finally:
        _kill_tree(proc)
    before = _finished_trials(exp_dir)
    assert 2 <= len(before) < samples
    stamps = {t: (exp_dir / t / "run" / "status.json").stat().st_mtime_ns for t in before}
    progress = {t: (exp_dir / t / "run" / "progress.csv").read_text() for t in before}

    out = subprocess.run(_command("--resume"), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    after = _finished_trials(exp_dir)
    assert len(after) == samples  # exactly the planned number, not more
    for t in before:  # finished before the kill: not trained again
        assert (exp_dir / t / "run" / "status.json").stat().st_mtime_ns == stamps[t]
        assert (exp_dir / t / "run" / "progress.csv").read_text() == progress[t]
    table = pd.read_csv(exp_dir / "checkpoints.csv")
    assert set(table["trial_id"]) == {t.removeprefix("trial_") for t in after}


@pytest.mark.parametrize("args, message", [
    (["--set", "train.lr=0.01"], "--set train.lr fixes a searched hyperparameter"),
    (["--set", "train.nope=1"], "train.nope"),
    (["--metric", "co_bps"], "invalid choice"),
    (["--resume"], "search_setup.json"),
])
def test_bad_requests_fail_before_ray_starts(configured, args, message):
    out = subprocess.run(_command(*args), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and message in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_a_bad_range_in_the_generated_search_space_names_key_and_file(configured, nlb_home):
    path = nlb_home.config_dir / "mc_maze_small.search.yaml"
    text = path.read_text()
    assert "train.lr: {sample_fn: uniform, low: 1.0e-05" in text
    path.write_text(text.replace("train.lr: {sample_fn: uniform, low: 1.0e-05",
                                 "train.lr: {sample_fn: loguniform, low: 0.0"))
    out = subprocess.run(_command(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and f"{path}: train.lr: loguniform needs low > 0" in out.stderr, out.stderr[-2000:]


@pytest.mark.slow
def test_asha_ranks_every_trial_it_started_and_build_ensemble_uses_them(configured, nlb_home, tmp_path):
    exp_dir = configured / "asha"
    out = subprocess.run(_command("--samples", "5", "--max-concurrent", "1", "--scheduler", "asha", "--name", "asha",
                                  *TINY), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    statuses = {t.name.removeprefix("trial_"): json.loads((t / "run" / "status.json").read_text())["status"]
                for t in exp_dir.glob("trial_*")}
    assert len(statuses) == 5 and set(statuses.values()) <= FINAL
    stopped = [t for t, s in statuses.items() if s == "stopped"]
    assert stopped, statuses  # ASHA stopped some at its rung, and they ended as runs do
    for t in stopped:
        assert (exp_dir / f"trial_{t}" / "run" / STOP_REQUESTED).is_file()  # the flag the trial ended on
        kept = [p for p in (exp_dir / f"trial_{t}" / "run" / "checkpoints").glob("*") if (p / "model.pt").is_file()]
        assert kept and all((p / "rates_val.h5").is_file() and (p / "rates_test.h5").is_file() for p in kept)
    table = pd.read_csv(exp_dir / "checkpoints.csv")
    assert set(table["trial_id"]) == set(statuses)  # every trial started is ranked, the stopped ones too
    assert f"{len(stopped)} stopped" in out.stdout and "still running" not in out.stdout

    sub_dir = tmp_path / "sub"
    built = subprocess.run([sys.executable, str(REPO / "build_ensemble.py"), "mc_maze_small", "--experiment", str(exp_dir),
                            "--folds", "0", "--out", str(sub_dir)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    record = json.loads((sub_dir / "ensemble.json").read_text())
    assert {m["trial_id"] for m in record["members"]} <= set(statuses)
    assert (sub_dir / "mc_maze_small_submission.h5").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_sigterm_ends_like_ctrl_c_and_no_ray_process_outlives_the_driver(configured, sig):
    """SIGTERM: Tune's Ctrl-C path, the resume hint, ray.shutdown. SIGKILL (the driver alone, as
    `kill -9` does it): the reaper ends the Ray processes the driver left. (SIGHUP takes SIGTERM's
    handler: test_sighup_and_sigterm_become_ctrl_c.)"""
    name = f"sig{int(sig)}"
    long = [*TINY, "--set", "train.max_passes=1000"]  # still training when the signal comes
    proc = subprocess.Popen(_command("--samples", "2", "--max-concurrent", "1", "--name", name, *long),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    exp_dir = configured / name
    try:
        deadline = time.monotonic() + 300
        while not list(exp_dir.glob("trial_*/run/progress.csv")):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no trial started in time"
            time.sleep(0.5)
        family = psutil.Process(proc.pid).children(recursive=True)
        assert family  # Ray's processes, started by the driver
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            _kill_tree(proc)
    _, alive = psutil.wait_procs(family, timeout=30)
    left = [(p.pid, p.name()) for p in alive]
    for p in alive:  # never leave them to the next test
        p.kill()
    assert not left
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, err[-3000:]
        assert f"continue with: run_hyperopt.py mc_maze_small --resume --name {name}" in err
        assert "Traceback" not in err
    assert (exp_dir / "search_setup.json").is_file()


def test_trial_outcomes_come_from_the_run_directories(tmp_path):
    """What the summary line says: a run's status on disk wins over Tune's last result (an
    interrupted driver may not have seen the final report); errored trials are errored."""
    from ray.tune import Result

    from nlbpipe.search import summarize, trial_outcomes

    def trial(name, status=None, error_json=False):
        run = tmp_path / f"trial_{name}" / "run"
        run.mkdir(parents=True)
        if status:
            (run / "status.json").write_text(json.dumps({"status": status}))
        if error_json:
            (run.parent / TRIAL_ERROR_JSON).write_text("{}")
        return str(run.parent)

    results = [
        Result(metrics={"trial_status": "running"}, checkpoint=None, error=None, path=trial("a", "completed")),
        Result(metrics={"trial_status": "running"}, checkpoint=None, error=None, path=trial("b", "stopped")),
        Result(metrics={"trial_status": "running"}, checkpoint=None, error=RuntimeError("x"), path=trial("c", "running")),
        Result(metrics={"trial_status": "errored"}, checkpoint=None, error=None, path=trial("d", error_json=True)),
        Result(metrics={"trial_status": "running"}, checkpoint=None, error=None, path=trial("e", "running")),
        Result(metrics={}, checkpoint=None, error=None, path=trial("f")),
    ]
    assert trial_outcomes(results) == {"a": "completed", "b": "stopped", "c": "errored", "d": "errored",
                                       "e": "running", "f": "not started"}
    assert summarize(results) == {"completed": 1, "stopped": 1, "errored": 2, "running": 1, "not started": 1}


def test_the_exit_code_says_whether_the_search_ended_and_anything_finished():
    from nlbpipe.search import search_exit

    assert search_exit({"a": "completed", "b": "running"}, 2)[0] == 130  # interrupted: --resume continues
    assert search_exit({"a": "completed", "b": "not started"}, 2) == (130, "search incomplete (1 of 2 trials ended)")
    code, line = search_exit({"a": "errored", "b": "errored"}, 2)
    assert code == 1 and line.startswith("no trial finished (2 errored")  # never exit 0 on nothing
    assert search_exit({"a": "errored", "b": "stopped"}, 2) == (0, None)


@pytest.mark.slow
def test_a_deterministic_trial_error_is_recorded_as_errored_not_retried(small_synthetic, tmp_path):
    """run_trial in a real Tune run whose data cannot be loaded (run_search refuses that up front;
    here the trial meets it): one attempt, recorded as errored with the loader's message."""
    # In a child interpreter: Ray leaves gRPC threads in the process that ran it, and a later fork
    # there (any test's subprocess) can hang in gRPC's fork handler.
    script = r"""
import json, sys
import ray
from ray import tune
from nlbpipe.config import RunConfig, apply_overrides
from nlbpipe.search import run_trial, trial_outcomes

raw, cache, exp = sys.argv[1:4]
cfg = apply_overrides(RunConfig(), {"data.dataset": "mc_maze_small", "data.raw_dir": raw, "data.cache_dir": cache})
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
try:
    fn = tune.with_parameters(run_trial, base_config=cfg.to_dict(), experiment_dir=exp + "/bad", metric="val_co_bps")
    results = tune.Tuner(
        fn, tune_config=tune.TuneConfig(num_samples=1, metric="val_co_bps", mode="max"),
        run_config=tune.RunConfig(name="bad", storage_path=exp, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=2)),
    ).fit()
finally:
    ray.shutdown()
[r] = list(results)
print("RESULT " + json.dumps({"error": None if r.error is None else str(r.error),
                              "status": r.metrics["trial_status"], "message": r.metrics["error"],
                              "iterations": r.metrics["training_iteration"],
                              "outcomes": list(trial_outcomes(results).values()),
                              "rows": len(r.metrics_dataframe)}))
"""
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "typo"), str(small_synthetic.cache_dir),
                           str(tmp_path / "exp")], capture_output=True, text=True, timeout=300)
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")] or [proc.stdout + proc.stderr]
    r = json.loads(line[len("RESULT "):])
    assert r["error"] is None and r["status"] == "errored"
    assert "typo" in r["message"] and r["iterations"] == 1  # one attempt, no retries
    assert r["outcomes"] == ["errored"]
    assert r["rows"] == 1


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_sighup_and_sigterm_become_ctrl_c(sig):
    """The handler run_search installs after ray.init (which sets its own SIGTERM handler): the
    signal reaches the driver as SIGINT, the path Tune saves the experiment on."""
    from nlbpipe.ray_driver import interrupt_on_term

    saved = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        interrupt_on_term()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(sig)
            time.sleep(1)  # the SIGINT it sends itself arrives here at the latest
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
