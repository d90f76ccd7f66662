"""How good are nlbpipe's models? The search and ensemble on several seeds of a synthetic stand-in.

For a dataset key, a compute budget (search trials x passes per trial) and several seeds of the
synthetic stand-in, runs the pipeline's own scripts per seed (download_data.py --synthetic,
generate_configs.py, run_hyperopt.py, build_ensemble.py: run_hyperopt's code path) in a folder of its
own, then scores on the val and the hidden test phase: the ground-truth rates, the smoothing
baseline, the best single model and the top-N and greedy ensembles (co-bps, vel R2, psth R2, fp-bps),
each model row also as a share of the truth's co-bps. Per seed, then the mean over seeds.

    .venv/bin/python benchmarks/quality.py [--dataset mc_maze_small_20] [--seeds 0 1 2]
        [--recipe demo|template] [--samples 20] [--passes 250] [--concurrent 2] [--device cpu|cuda]
        [--dropout LOW HIGH] [--early-stop co_bps] [--patience 60]   # demo-recipe variants
        [--search-seed N]   # the same stand-ins, another search

``--recipe demo`` (the default on CPU) is ``make demo``'s recipe (nlbpipe/demo.py) at the given
budget; ``--recipe template`` the generated config as it is (the 2021 recipe at its full length,
unless --passes cuts it); ``--device cuda`` runs the template recipe on the GPU. Last line: one
JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlbpipe import demo  # noqa: E402
from nlbpipe.datasets import resolve  # noqa: E402
from nlbpipe.settings import get_settings  # noqa: E402

METRICS = ("co_bps", "vel_r2", "psth_r2", "fp_bps")
ROWS = ("ground truth", "smoothing baseline", "best single NDT", "top-N ensemble", "greedy ensemble")


def _row_name(name: str) -> str:
    return next(r for r in ROWS if name.startswith(r))


def prepare_standin(dataset: str, seed: int, scale: float, root: Path) -> Path:
    """``root/seed<seed>`` as ``NLB_HOME``: the stand-in of ``dataset`` and its generated config,
    written unless an earlier run left them there; returns the config's path."""
    home = root / f"seed{seed}"
    for var in ("NLB_DATA_RAW", "NLB_SYNTHETIC_RAW", "NLB_CACHE_DIR", "CONFIG_DIR", "RAY_TUNE_HOME",
                "NLB_SUBMISSIONS_DIR"):
        os.environ.pop(var, None)
    os.environ["NLB_HOME"] = str(home)
    get_settings.cache_clear()
    s = get_settings()
    info, _ = resolve(dataset)
    manifest = s.synthetic_raw / "synthetic_manifest.json"
    written = json.loads(manifest.read_text()).get("datasets", {}).get(info.name, {}) if manifest.is_file() else {}
    if (written.get("seed"), written.get("scale")) == (seed, scale):
        print(f"reusing the stand-in in {s.synthetic_raw}: {written}")  # a stand-in a variant run wrote
    else:
        demo._run("download_data.py", "--synthetic", info.name, "--seed", str(seed), "--scale", str(scale))
    config = s.config_dir / f"{dataset}.yaml"
    if not config.exists():
        demo._run("generate_configs.py", dataset, "--synthetic")
    return config


def run_seed(args, seed: int, root: Path) -> dict:
    """One seed's stand-in, search and ensemble in ``root``; {phase: {row: metrics}}, wall seconds."""
    config = prepare_standin(args.dataset, seed, args.scale, root)
    home, s, key = root / f"seed{seed}", get_settings(), args.dataset
    exp_dir, out_dir = s.results_dir / key / args.name, s.submissions_dir / key / args.name
    sets = []
    full = demo.SIZES["full"]
    # the demo's search scaled to --samples trials
    initial_points = max(2, round(full.initial_points * args.samples / full.samples))
    max_models = round(full.max_models * args.samples / full.samples)
    if args.recipe == "demo":
        size = demo.DemoSize(scale=args.scale, samples=args.samples, concurrent=args.concurrent,
                             max_passes=args.passes, val_interval_passes=max(1, round(args.passes * full.val_interval_passes / full.max_passes)),
                             initial_points=initial_points, max_models=max_models,
                             dropout=tuple(args.dropout), lr=tuple(args.lr), early_stop=args.early_stop,
                             input_smooth_ms=tuple(args.input_smooth),
                             patience_passes=args.patience)
        (home / args.name).mkdir(parents=True, exist_ok=True)
        config = demo.write_demo_config(config, home / args.name, size)
    elif args.passes:
        sets += ["--set", f"train.max_passes={args.passes}"]
    if args.device == "cuda":
        sets += ["--set", "train.device=cuda"]
    t0 = time.perf_counter()
    search = [key, "--name", args.name, "--quiet"]
    if args.score_only:
        pass
    elif (exp_dir / "search_setup.json").exists():
        demo._run("run_hyperopt.py", *search, "--resume")
    else:
        demo._run("run_hyperopt.py", *search, "--config", str(config), "--samples", str(args.samples),
                  "--max-concurrent", str(args.concurrent), "--cpus-per-trial", "1",
                  "--n-initial-points", str(initial_points),
                  "--seed", str(seed if args.search_seed is None else args.search_seed),
                  *(["--num-cpus", str(args.concurrent)] if args.device == "cpu" else []), *sets)
    if not args.score_only:
        demo._run("build_ensemble.py", key, "--experiment", str(exp_dir), "--out", str(out_dir),
                  "--max-models", str(max_models))
    wall = time.perf_counter() - t0
    scores: dict = {"val": {}, "test": {}}
    for name, phase, metrics in demo.comparison_rows({"ensemble": out_dir}, key):
        scores[phase][_row_name(name)] = {m: float(metrics.get(m, float("nan"))) for m in METRICS}
    return {"seed": seed, "wall_s": round(wall, 1), "scores": scores}


def with_shares(scores: dict) -> dict:
    for phase in scores.values():
        truth = phase["ground truth"]["co_bps"]
        for name, m in phase.items():
            if name != "ground truth":
                m["share_of_truth"] = m["co_bps"] / truth if truth else float("nan")
            if name not in ("ground truth", "smoothing baseline"):
                base = phase["smoothing baseline"]["co_bps"]
                m["x_smoothing"] = m["co_bps"] / base if base > 0 else float("nan")
    return scores


def mean_scores(results: list[dict]) -> dict:
    out: dict = {}
    for phase in ("val", "test"):
        out[phase] = {}
        for name in ROWS:
            rows = [r["scores"][phase][name] for r in results if name in r["scores"][phase]]
            if rows:
                out[phase][name] = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    return out


def print_table(title: str, scores: dict) -> None:
    print(f"\n{title}")
    cols = (*METRICS, "share_of_truth", "x_smoothing")
    print(f"{'':<22}{'phase':>6}" + "".join(f"{c:>15}" for c in cols))
    for phase in ("val", "test"):
        for name, m in scores[phase].items():
            print(f"{name:<22}{phase:>6}" + "".join(f"{m.get(c, float('nan')):>15.4f}" for c in cols))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mc_maze_small_20", help="dataset key (default mc_maze_small_20)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="stand-in (and searcher) seeds")
    p.add_argument("--recipe", choices=("demo", "template"), default=None,
                   help="demo: make demo's recipe at this budget (default on CPU); template: the generated config")
    full = demo.SIZES["full"]
    p.add_argument("--samples", type=int, default=full.samples, help=f"search trials per seed (default {full.samples})")
    p.add_argument("--passes", type=int, default=None,
                   help=f"passes per trial (demo default {full.max_passes}; template default: its own budget)")
    p.add_argument("--concurrent", type=int, default=2, help="trials at once (default 2)")
    p.add_argument("--scale", type=float, default=1.0, help="share of the dataset's trials written (default 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dropout", type=float, nargs=2, default=list(full.dropout), metavar=("LOW", "HIGH"),
                   help=f"demo recipe: searched range of model.dropout and dropout_embedding (default {full.dropout})")
    p.add_argument("--lr", type=float, nargs=2, default=list(full.lr), metavar=("LOW", "HIGH"),
                   help=f"demo recipe: searched learning-rate range (default {full.lr})")
    p.add_argument("--input-smooth", type=float, nargs=2, default=list(full.input_smooth_ms), metavar=("LOW", "HIGH"),
                   help=f"demo recipe: searched range of model.input_smooth_ms, 0 0 for raw counts "
                        f"(default {full.input_smooth_ms})")
    p.add_argument("--early-stop", default=full.early_stop, choices=("masked_loss", "co_bps", "both"),
                   help=f"demo recipe: train.early_stop (default {full.early_stop})")
    p.add_argument("--patience", type=int, default=full.patience_passes,
                   help=f"demo recipe: train.patience_passes (default {full.patience_passes})")
    p.add_argument("--search-seed", type=int, default=None,
                   help="the searcher's seed (default: each stand-in's seed, as make demo pairs them); another "
                        "seed on the same stand-ins measures a search's run-to-run spread")
    p.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a new temporary one)")
    p.add_argument("--score-only", action="store_true",
                   help="only score what an earlier run with this --work and --name built")
    p.add_argument("--name", default="quality",
                   help="experiment name: variants in one --work folder share its stand-ins (default quality)")
    args = p.parse_args()
    args.recipe = args.recipe or ("template" if args.device == "cuda" else "demo")
    if args.recipe == "demo" and not args.passes:
        args.passes = demo.SIZES["full"].max_passes
    root = args.work or Path(tempfile.mkdtemp(prefix="nlbpipe_quality_"))
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    print(f"quality: {args.dataset}, recipe {args.recipe}, {args.samples} trials x "
          f"{args.passes or 'template'} passes, seeds {args.seeds}, in {root}", flush=True)
    results = []
    for seed in args.seeds:
        r = run_seed(args, seed, root)
        with_shares(r["scores"])
        results.append(r)
        print_table(f"seed {seed} ({r['wall_s']} s search + ensemble)", r["scores"])
    mean = mean_scores(results)
    print_table(f"mean over {len(results)} seeds", mean)
    print(json.dumps({"benchmark": "quality", "dataset": args.dataset, "recipe": args.recipe,
                      "samples": args.samples, "passes": args.passes, "device": args.device,
                      "seeds": results, "mean": mean}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
