"""The shipped recipes as benchmarks: each runs through the product's own runner (`hf_compress.runner.run_recipe`,
what ``hf-compress run`` does), at one or several seeds, and its summary rows are stored as they are (the runner's
summary schema), so what the headline table reports is what a user gets from the same recipe.

    python -m benchmarks recipes                                 # every headline recipe at seed 0
    python -m benchmarks recipes --recipe minilm-rt-frontier --seeds 0,1,2
    python -m benchmarks recipes --quick                         # a few steps of each: does it run
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
from pathlib import Path

import torch

from hf_compress.evaluation import format_speedup
from hf_compress.metrics import percent_of_teacher
from hf_compress.recipes import load_recipe
from hf_compress.runner import run_recipe
from hf_compress.runner.summary import SUMMARY_SCHEMA
from hf_compress.stages import get_stage

from . import common

RECIPES = common.ROOT.parent / "recipes"
HEADLINE = ("minilm-rt-frontier", "quickstart")  # the recipes behind the headline table, in its order


def quick_overrides(recipe_path: Path) -> list[str]:
    """``--set`` values that cut a recipe to a few steps on a few rows (a check that it runs, not a result)."""
    recipe = load_recipe(recipe_path)
    sets = ["data.train_limit=64", "data.eval_limit=32", "data.test_limit=64"]
    for stage in recipe.stages:
        if get_stage(stage.method).trains:
            sets.append(f"stages.{stage.name}.max_steps=4")
            schedule = {
                "prune_start_step": 0,
                "prune_end_step": 2,
                "prune_every": 1,
                "sparsify_start_step": 0,
                "sparsify_end_step": 2,
                "sparsify_every": 1,
            }  # fmt: skip  (a schedule that fits 4 steps)
            sets += [f"stages.{stage.name}.{k}={v}" for k, v in schedule.items() if k in stage.fields]
    return sets


def _earlier_runs(suite: str) -> list[dict]:
    """Today's stored runs of the suite (another recipe or seed run earlier today is kept, not overwritten)."""
    path = common.result_path(suite)
    return json.loads(path.read_text()).get("runs", []) if path.is_file() else []


def run(names: list[str], seeds: list[int], quick: bool, out: Path, argv: list[str] | None = None) -> dict:
    """Run each recipe at each seed into ``out``/<recipe>-seed<N>; the payload is rewritten after every run, merged
    with today's earlier runs (a run of the same recipe and seed replaces its earlier one)."""
    suite = "recipes" + ("-quick" if quick else "")
    payload = {"suite": "recipes", "argv": list(argv or []), "schema": SUMMARY_SCHEMA, "quick": quick,
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
               "runs": _earlier_runs(suite)}  # fmt: skip
    for name in names:
        path = RECIPES / f"{name}.yaml"
        cut = quick_overrides(path) if quick else []
        for seed in seeds:
            sets = [f"seed={seed}", *cut]
            recipe = load_recipe(path, sets)
            folder = out / f"{name}-seed{seed}"
            logging.getLogger(__name__).info("recipe %s, seed %d -> %s", name, seed, folder)
            run_recipe(recipe, folder)
            summary = json.loads((folder / "summary.json").read_text())
            payload["runs"] = [r for r in payload["runs"] if (r["recipe"], r["seed"]) != (name, seed)]
            payload["runs"].append({"recipe": name, "seed": seed, "metric": recipe.data.metric,
                                    "command": f"hf-compress run recipes/{name}.yaml --set seed={seed}",
                                    "teacher": summary["teacher"], "stages": summary["stages"]})  # fmt: skip
            common.write_json(suite, payload)  # partial results as they come
    return payload


def _mean_sd(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}"


def _speedup(row: dict, shape: str) -> str:
    """The speed-up over the teacher, marked noisy where the teacher-vs-itself control was off."""
    ratio = row.get(f"latency_{shape}")  # the model's time over the teacher's
    if not ratio or math.isnan(ratio):
        return "n/a"
    return format_speedup(ratio, row.get(f"latency_control_{shape}"))


def _line(name: str, row: dict, runs: list[dict], index: int | None) -> str:
    """One table line: the teacher (``index`` None) or stage ``index`` of ``runs`` (one per seed)."""
    metric = runs[0]["metric"]
    rows = [r["teacher"] if index is None else r["stages"][index] for r in runs]
    shares = [percent_of_teacher(metric, x[metric], r["teacher"][metric]) for x, r in zip(rows, runs)]
    if index is None:
        stage, method, fast8, fast1 = "teacher", "-", "1.00x", "1.00x"
    else:
        stage, method = row["stage"], row.get("method", "-")
        fast8, fast1 = _speedup(row, "8x128"), _speedup(row, "1x128")
    cells = [name, stage, method, _mean_sd([x[metric] for x in rows]), _mean_sd(shares, 1), fast8, fast1,
             f"{row['size_mb']:.1f}", f"{row['params_m']:.2f}"]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def report(payload: dict) -> str:
    """The headline table: per recipe and stage, the metric (mean +- sd over seeds), % of the recipe's teacher,
    the speed-ups at 8x128 and 1x128 against that teacher (the first seed's run), size, and the command."""
    lines = ["| recipe | stage | method | metric (mean +- sd over seeds) | % of teacher | speed-up 8x128 | "
             "speed-up 1x128 | MB | params (M) |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    commands = []
    by_recipe: dict[str, list[dict]] = {}
    for run_ in payload["runs"]:
        by_recipe.setdefault(run_["recipe"], []).append(run_)
    for name, runs in by_recipe.items():
        lines.append(_line(name, runs[0]["teacher"], runs, None))
        stages = [(i, row) for i, row in enumerate(runs[0]["stages"]) if not get_stage(row["method"]).becomes_teacher]
        lines += [_line(name, row, runs, index) for index, row in stages]  # a fine-tuned teacher is the teacher row
        seeds = ", ".join(str(r["seed"]) for r in runs)
        commands.append(f"- {name} ({runs[0]['metric']}, seeds {seeds}): `hf-compress run recipes/{name}.yaml "
                        "--set seed=N`")  # fmt: skip
    machine = payload.get("machine", "this machine")
    note = ("Speed-ups are the first seed's, measured by the runner interleaved against the recipe's own teacher "
            f"(its fine-tuned stage) on {machine}: torch eager, fp32 or int8 dynamic.")  # fmt: skip
    return "\n".join([*lines, "", note, "", *commands])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", action="append", help=f"a recipe under recipes/ (default: {list(HEADLINE)})")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--quick", action="store_true", help="a few steps on a few rows: does each recipe run")
    parser.add_argument("--output-dir", type=Path, default=common.CACHE / "recipes")
    args = parser.parse_args(argv)
    names = args.recipe or list(HEADLINE)
    unknown = [n for n in names if not (RECIPES / f"{n}.yaml").is_file()]
    if unknown:
        parser.error(
            f"--recipe {unknown}: no such recipe; choose from {sorted(p.stem for p in RECIPES.glob('*.yaml'))}"
        )
    seeds = [int(s) for s in args.seeds.split(",")]
    logging.basicConfig(level=logging.INFO, format="[benchmarks] %(message)s")
    common.setup()
    payload = run(names, seeds, args.quick, args.output_dir / ("quick" if args.quick else "full"), argv=argv)
    print(report(payload))


if __name__ == "__main__":
    main()
