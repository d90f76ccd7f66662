"""Every script on bad input, as a hostile but realistic user gives it (issue 13).

Each case runs the script as a subprocess on a prepared folder and asserts what the project promises
for bad input: exactly one ``error:`` line (or, for a submission that fails its check, one ``FAIL``
line) naming the flag, file, key or tensor at fault; the exit code (2 for bad input, 1 for a file
that fails validation); no traceback; and no new file under the temporary folder (nothing written
under a final name, no partial file left). Most cases end before Ray starts; the few that must ask
the cluster (GPUs, CPUs) start a local one and still write nothing.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

from nlbpipe import submission as sub

REPO = Path(__file__).resolve().parent.parent
KEY = "mc_maze_small"


@dataclass
class World:
    """The prepared folder of one case: paths, and the environment the script runs with."""
    root: Path
    env: dict
    data: dict = field(default_factory=dict)

    def set(self, **env) -> None:
        self.env.update({k: str(v) for k, v in env.items()})


@dataclass
class Case:
    id: str
    script: str  # a script in the repo, or "-m nlbpipe.train"
    args: Callable[[World], list]  # the command-line arguments (may name prepared files)
    expect: str  # must appear in the one error line
    rc: int = 2
    setup: Callable[[World], None] | None = None
    limit_fsize: int | None = None  # RLIMIT_FSIZE in bytes: a real EFBIG, like a full disk
    max_s: float | None = None  # a bound the user is promised (e.g. --address gives up)


# ------------------------------------------------------------------------------------ setups

def _configs(w: World) -> None:
    """CONFIG_DIR/mc_maze_small.yaml pointing at the session's synthetic stand-in."""
    w.set(NLB_SYNTHETIC_RAW=w.env.get("NLB_SYNTHETIC_RAW_USE", w.data["synthetic"]))
    out = subprocess.run([sys.executable, str(REPO / "generate_configs.py"), "--synthetic", KEY],
                         env=w.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def _read_only_dir(w: World) -> Path:
    if os.geteuid() == 0:  # root ignores permission bits: /sys refuses new folders to everyone
        return Path("/sys/nlbpipe-read-only")
    ro = w.root / "read_only"
    ro.mkdir()
    ro.chmod(0o555)
    return ro


def _a_file(w: World) -> Path:
    path = w.root / "a_file"
    path.write_text("not a folder\n")
    return path


def _seed0(w: World) -> None:
    from nlbpipe.synthetic import write_synthetic

    write_synthetic(KEY, Path(w.env["NLB_SYNTHETIC_RAW"]), seed=0, scale=0.05, targets=False)


def _empty_templates(w: World) -> None:
    tdir = w.root / "templates"
    shutil.copytree(REPO / "nlbpipe" / "templates", tdir)
    for name in ("base.search.yaml", f"{KEY}.search.yaml"):
        (tdir / name).write_text("# nothing searched\n")
    w.data["templates"] = tdir


def _fake_setup(samples: int):
    def setup(w: World) -> None:
        _configs(w)
        exp = Path(w.env["RAY_TUNE_HOME"]) / KEY / f"{KEY}_hyperopt"
        exp.mkdir(parents=True)
        base = subprocess.run([sys.executable, "-c", "import json,sys; from nlbpipe.config import load_config;"
                               "print(json.dumps(load_config(sys.argv[1]).to_dict()))",
                               str(Path(w.env["CONFIG_DIR"]) / f"{KEY}.yaml")],
                              env=w.env, capture_output=True, text=True, timeout=60, check=True).stdout
        (exp / "search_setup.json").write_text(json.dumps({"samples": samples, "seed": 42,
                                                           "base_config": json.loads(base)}))
    return setup


def _unreadable_nwb(w: World) -> None:
    raw = w.root / "raw_copy"
    shutil.copytree(w.data["synthetic"], raw)
    nwb = next(raw.rglob("*desc-train*.nwb"))
    nwb.write_bytes(nwb.read_bytes()[:4096])  # truncated: not an HDF5 file any more
    w.data["nwb"] = nwb
    w.set(NLB_SYNTHETIC_RAW_USE=raw, NLB_CACHE_DIR=w.root / "cache_copy")
    _configs(w)


def _submission(dtype=np.float32, extra_group=False, nan=False, drop=None, key=KEY):
    def setup(w: World) -> None:
        path = w.root / f"{key}_{np.dtype(dtype).name}.h5"
        with h5py.File(path, "w") as f:
            g = f.create_group(key)
            for k, shape in sub.shapes_from_registry(key).items():
                if k == drop:
                    continue
                x = np.full(shape, 0.1, np.float32)
                if nan and k == "eval_rates_heldout":
                    x[0, 0, 0] = np.nan
                g.create_dataset(k, data=x.astype(dtype) if k == "eval_rates_heldout" else x)
            if extra_group:
                f.create_group("mc_rtt").create_dataset("eval_rates_heldout", data=np.zeros((1, 1, 1), np.float32))
        w.data.setdefault("files", []).append(path)
    return setup


def _two(*setups):
    def setup(w: World) -> None:
        for s in setups:
            s(w)
    return setup


def _bad_run_config(w: World) -> None:
    from nlbpipe.config import RunConfig, apply_overrides, save_config

    cfg = apply_overrides(RunConfig(), {"data.dataset": KEY, "data.raw_dir": str(w.root / "typo"),
                                        "data.cache_dir": str(w.root / "cache")})
    save_config(cfg, w.root / "run.yaml")


# ------------------------------------------------------------------------------------- cases

HYPEROPT = ["--num-cpus", "2", "--quiet"]

CASES = [
    # download_data.py
    Case("download-seed-negative", "download_data.py", lambda w: ["--synthetic", KEY, "--seed", "-1"], "--seed"),
    Case("download-unknown-dataset", "download_data.py", lambda w: ["--synthetic", "mc_mazee"], "mc_mazee"),
    Case("download-other-seed-without-force", "download_data.py",
         lambda w: ["--synthetic", KEY, "--scale", "0.05", "--seed", "1"], "written with seed 0", setup=_seed0),
    Case("download-home-is-a-file", "download_data.py", lambda w: ["--synthetic", KEY, "--scale", "0.05"],
         "a_file is a file, not a folder",
         setup=lambda w: w.set(NLB_HOME=_a_file(w), NLB_SYNTHETIC_RAW=w.root / "a_file" / "synthetic")),
    Case("download-home-read-only", "download_data.py", lambda w: ["--synthetic", KEY, "--scale", "0.05"],
         "nlbpipe-read-only" if os.geteuid() == 0 else "read_only",
         setup=lambda w: w.set(NLB_SYNTHETIC_RAW=_read_only_dir(w) / "synthetic")),
    Case("download-disk-full", "download_data.py", lambda w: ["--synthetic", KEY, "--scale", "0.05"],
         "File too large", limit_fsize=200_000),
    # generate_configs.py
    Case("configs-dir-is-a-file", "generate_configs.py", lambda w: [KEY], "a_file is a file, not a folder",
         setup=lambda w: w.set(CONFIG_DIR=_a_file(w))),
    Case("configs-home-is-a-file", "generate_configs.py", lambda w: [KEY], "a_file is a file, not a folder",
         setup=lambda w: w.set(NLB_HOME=_a_file(w), CONFIG_DIR=w.root / "a_file" / "configs")),
    Case("configs-dir-read-only", "generate_configs.py", lambda w: [KEY],
         "nlbpipe-read-only" if os.geteuid() == 0 else "read_only",
         setup=lambda w: w.set(CONFIG_DIR=_read_only_dir(w) / "configs")),
    Case("configs-empty-template", "generate_configs.py", lambda w: [KEY, "--template-dir", w.data["templates"]],
         "base.search.yaml", setup=_empty_templates),
    # run_hyperopt.py: refused before Ray starts
    Case("hyperopt-seed-negative", "run_hyperopt.py", lambda w: [KEY, "--seed", "-1"], "--seed"),
    Case("hyperopt-max-concurrent-0", "run_hyperopt.py", lambda w: [KEY, "--max-concurrent", "0"], "--max-concurrent"),
    Case("hyperopt-cpus-per-trial-0", "run_hyperopt.py", lambda w: [KEY, "--cpus-per-trial", "0"], "--cpus-per-trial"),
    Case("hyperopt-cpus-per-trial-negative", "run_hyperopt.py", lambda w: [KEY, "--cpus-per-trial", "-1"],
         "--cpus-per-trial"),
    Case("hyperopt-num-cpus-0", "run_hyperopt.py", lambda w: [KEY, "--num-cpus", "0"], "--num-cpus"),
    Case("hyperopt-samples-0", "run_hyperopt.py", lambda w: [KEY, "--samples", "0"], "--samples"),
    Case("hyperopt-resume-other-samples", "run_hyperopt.py", lambda w: [KEY, "--resume", "--samples", "8"],
         "--samples 8: the search being resumed has --samples 4", setup=_fake_setup(4)),
    Case("hyperopt-address-unreachable", "run_hyperopt.py", lambda w: [KEY, "--address", "127.0.0.1:1", "--quiet"],
         "--address 127.0.0.1:1", setup=_configs, max_s=30),
    Case("hyperopt-raw-dir-typo", "run_hyperopt.py", lambda w: [KEY, *HYPEROPT, "--set", f"data.raw_dir={w.root}/typo"],
         "data.raw_dir=", setup=_configs),
    Case("hyperopt-unreadable-nwb", "run_hyperopt.py", lambda w: [KEY, *HYPEROPT], "desc-train", setup=_unreadable_nwb),
    Case("hyperopt-cuda-without-gpus", "run_hyperopt.py",
         lambda w: [KEY, *HYPEROPT, "--gpus-per-trial", "0", "--set", "train.device=cuda"], "train.device is cuda",
         setup=_configs),
    Case("hyperopt-results-read-only", "run_hyperopt.py", lambda w: [KEY, *HYPEROPT],
         "nlbpipe-read-only" if os.geteuid() == 0 else "read_only",
         setup=lambda w: (_configs(w), w.set(RAY_TUNE_HOME=_read_only_dir(w) / "ray_results"))),
    Case("hyperopt-results-is-a-file", "run_hyperopt.py", lambda w: [KEY, *HYPEROPT], "a_file is a file, not a folder",
         setup=lambda w: (_configs(w), w.set(RAY_TUNE_HOME=_a_file(w)))),
    # run_hyperopt.py: requests checked against the (local) cluster before anything is written
    Case("hyperopt-gpu-without-gpu", "run_hyperopt.py", lambda w: [KEY, *HYPEROPT, "--gpus-per-trial", "1"],
         "--gpus-per-trial 1: the Ray cluster has 0 GPU(s)", setup=_configs),
    Case("hyperopt-more-cpus-than-the-cluster", "run_hyperopt.py", lambda w: [KEY, *HYPEROPT, "--cpus-per-trial", "3"],
         "--cpus-per-trial 3: the Ray cluster has 2 CPU(s)", setup=_configs),
    # build_ensemble.py
    Case("ensemble-folds-negative", "build_ensemble.py", lambda w: [KEY, "--folds", "-2"], "--folds"),
    Case("ensemble-folds-1", "build_ensemble.py", lambda w: [KEY, "--folds", "1"], "--folds"),
    Case("ensemble-greedy-init-0", "build_ensemble.py", lambda w: [KEY, "--greedy-init", "0"], "--greedy-init"),
    Case("merge-nan", "build_ensemble.py", lambda w: ["--merge", w.root / "all.h5", *w.data["files"]],
         "mc_maze_small/eval_rates_heldout: values: expected finite rates", setup=_submission(nan=True)),
    Case("merge-integer", "build_ensemble.py", lambda w: ["--merge", w.root / "all.h5", *w.data["files"]],
         "mc_maze_small/eval_rates_heldout: dtype", setup=_submission(np.int32)),
    Case("merge-incomplete", "build_ensemble.py", lambda w: ["--merge", w.root / "all.h5", *w.data["files"]],
         "mc_maze_small/train_rates_heldin: missing", setup=_submission(drop="train_rates_heldin")),
    # validate_submission.py: bad usage (2) and files that fail the check (1)
    Case("validate-rtol-negative", "validate_submission.py", lambda w: [KEY, w.data["files"][0], "--rtol", "-1"],
         "--rtol", setup=_submission()),
    Case("validate-score-with-a-submission", "validate_submission.py",
         lambda w: [KEY, w.data["files"][0], "--registry-shapes", "--score", w.data["files"][1]],
         "holds no eval_spikes_heldout", setup=_two(_submission(), _submission(np.float64))),
    Case("validate-float64", "validate_submission.py", lambda w: [KEY, w.data["files"][0], "--registry-shapes"],
         "mc_maze_small/eval_rates_heldout: dtype: expected float32, found float64", rc=1,
         setup=_submission(np.float64)),
    Case("validate-float16", "validate_submission.py", lambda w: [KEY, w.data["files"][0], "--registry-shapes"],
         "mc_maze_small/eval_rates_heldout: dtype: expected float32, found float16", rc=1,
         setup=_submission(np.float16)),
    Case("validate-extra-group", "validate_submission.py", lambda w: [KEY, w.data["files"][0], "--registry-shapes"],
         "unexpected group(s) mc_rtt", rc=1, setup=_submission(extra_group=True)),
    # python -m nlbpipe.train
    Case("train-unknown-key", "-m nlbpipe.train", lambda w: [w.root / "run.yaml", "--set", "model.layers=3",
                                                             "--run-dir", w.root / "r"],
         "model.layers", setup=_bad_run_config),
    Case("train-raw-dir-typo", "-m nlbpipe.train", lambda w: [w.root / "run.yaml", "--run-dir", w.root / "r"],
         "typo", setup=_bad_run_config),
]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, small_synthetic):
    root = tmp_path / "w"
    root.mkdir()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", RAY_DEDUP_LOGS="0",
               NLB_HOME=str(root / "home"), NLB_DATA_RAW=str(root / "home" / "raw"),
               NLB_SYNTHETIC_RAW=str(root / "home" / "synthetic"), NLB_CACHE_DIR=str(small_synthetic.cache_dir),
               CONFIG_DIR=str(root / "home" / "configs"), RAY_TUNE_HOME=str(root / "home" / "ray_results"),
               NLB_SUBMISSIONS_DIR=str(root / "home" / "submissions"))
    world = World(root, env, {"synthetic": small_synthetic.raw_dir})
    if case.setup is not None:
        case.setup(world)
    before = _files(root)

    script = ["-m", "nlbpipe.train"] if case.script.startswith("-m") else [str(REPO / case.script)]
    preexec = None
    if case.limit_fsize is not None:
        def preexec(limit=case.limit_fsize):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), not death by signal
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, *script, *map(str, case.args(world))], env=env, cwd=root,
                         capture_output=True, text=True, timeout=300, preexec_fn=preexec)
    took = time.monotonic() - t0

    both = out.stdout + out.stderr
    assert "Traceback" not in both, both[-3000:]
    assert out.returncode == case.rc, both[-3000:]
    if case.rc == 2:
        lines = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    else:
        lines = [x.strip() for x in out.stdout.splitlines() if x.strip().startswith("FAIL ")]
    assert len(lines) == 1, both[-3000:]
    assert case.expect in lines[0], lines[0]
    print(f"\nMEASURED {case.id}: rc {out.returncode}, {took:.1f} s: {lines[0]}")
    if case.max_s is not None:
        assert took < case.max_s, f"took {took:.1f} s"
    new = _files(root) - before
    assert not new, sorted(map(str, new))
