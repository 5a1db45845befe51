"""`hf-compress auto` as a benchmark: the search run through the product's own entry point
(`hf_compress.auto.run_search`, what ``hf-compress auto`` does) on recipes/minilm-rt-auto.yaml, its summary stored
as it is, and a table of what it chose against the targets: the test metric kept (of the teacher's) and the speed-up
beside the hand-tuned frontier.

    python -m benchmarks auto --max-drop 3% --budget 2h      # resumes an interrupted search in benchmarks/cache
    python -m benchmarks auto --record out/rt-auto           # store a search already run with hf-compress auto
    python -m benchmarks auto --quick                        # a few steps on a few rows: does it run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from hf_compress.auto import SearchConfig, run_search
from hf_compress.recipes import load_recipe

from . import common
from .recipes import quick_overrides

RECIPE = common.ROOT.parent / "recipes" / "minilm-rt-auto.yaml"
# the hand-tuned frontier the search must match (benchmarks/RESULTS.md, `python -m benchmarks onnx --frontier`):
# ORT int8 of the 3-layer, 2/3-width HomoDistil model
FRONTIER_SPEEDUP = {"8x128": 6.0, "1x128": 5.0}
KEEP = {"3%": 97.0, "1%": 99.0}  # the test share of the teacher each constraint must keep


def _quick_sets() -> list[str]:
    return quick_overrides(RECIPE) + ["auto.screen_steps=4", "auto.final_steps=6", "auto.latency_repeats=2",
                                      "auto.depths=[2, 3]", "auto.heads=[4, 8]"]  # fmt: skip


def run(max_drop: str | None, budget: str | None, quick: bool, record: Path | None) -> dict:
    if record is not None:
        summary = json.loads((record / "auto" / "summary.json").read_text())
        return {**summary, "source": str(record)}
    recipe = load_recipe(RECIPE, _quick_sets() if quick else [])
    settings = {**(recipe.auto or {}), **({"max_drop": max_drop} if max_drop else {})}
    settings.update({"budget": budget} if budget else ({"budget": "10m"} if quick else {}))
    name = f"auto-{str(settings['max_drop']).replace('%', 'pct')}" + ("-quick" if quick else "")
    summary = run_search(recipe, common.ROOT / "cache" / name, SearchConfig(**settings))
    return {**summary, "source": f"benchmarks/cache/{name}"}


def _compact(summary: dict) -> dict:
    """The stored row: the summary without the per-candidate list (kept in the search's own summary.json)."""
    keep = {k: v for k, v in summary.items() if k != "candidates"}
    keep["candidates_measured"] = len(summary.get("candidates", []))
    return keep


def report(payload: dict) -> str:
    lines = ["| constraint | chosen | runtime | val | test | % of teacher (test) | speed-up 8x128 | speed-up 1x128 | "
             "target | search wall / budget | steps |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in payload["runs"]:
        metric, chosen, teacher = row["metric"], row["chosen"], row["teacher"]
        test, base = chosen.get(f"{metric}_test"), teacher.get(f"{metric}_test")
        share = 100 * test / base if test is not None and base else None
        speed = chosen["speedup"]
        need = KEEP.get(str(row["constraint"]["max_drop"]))
        fast = all(speed.get(s, 0) >= v for s, v in FRONTIER_SPEEDUP.items())
        verdict = "-" if need is None or share is None else (
            f"{'met' if share >= need else 'NOT met'} (>= {need:g} %); "
            f"{'as fast as' if fast else 'slower than'} the frontier ({FRONTIER_SPEEDUP['8x128']:g}x / "
            f"{FRONTIER_SPEEDUP['1x128']:g}x)"
        )  # fmt: skip
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(
            f"| {row['constraint']['description']} | {chosen['key']} | {chosen['runtime']} | "
            f"{fmt(chosen.get(f'{metric}_validation'))} | {fmt(test)} | {'-' if share is None else f'{share:.1f}'} | "
            f"{speed.get('8x128', 0):.2f}x | {speed.get('1x128', 0):.2f}x | {verdict} | "
            f"{row['elapsed_s'] / 60:.0f} / {row['budget_s'] / 60:.0f} min | {row['training_steps']} |"
        )
    notes = [f"- {r['constraint']['description']}: {r['noise']}" for r in payload["runs"] if r.get("noise")]
    notes += [f"- {r['constraint']['description']}: not tried within the budget: {', '.join(r['not_tried'])}"
              for r in payload["runs"] if r.get("not_tried")]  # fmt: skip
    intro = ("Each row is one `hf-compress auto recipes/minilm-rt-auto.yaml` search with the row's constraint (its "
             "folder: " + ", ".join(f"`{r.get('source', '?')}`" for r in payload["runs"]) + "); the speed-ups are "
             "re-measured on the chosen model against the torch fp32 teacher.\n")  # fmt: skip
    return "\n".join([intro, *lines] + ([""] + notes if notes else []))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-drop", default=None, help="default: the recipe's auto.max_drop (3%%)")
    parser.add_argument("--budget", default=None, help="default: the recipe's auto.budget (2h)")
    parser.add_argument("--record", type=Path, default=None, help="store a finished search's OUTPUT folder")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    common.setup()
    row = _compact(run(args.max_drop, args.budget, args.quick, args.record))
    suite = "auto-quick" if args.quick else "auto"
    path = common.result_path(suite)
    earlier = json.loads(path.read_text()).get("runs", []) if path.is_file() else []
    earlier = [r for r in earlier if r["constraint"]["description"] != row["constraint"]["description"]]
    payload = {"suite": "auto", "argv": sys.argv[2:] if argv is None else list(argv), "runs": [*earlier, row],
               "machine": {"cpus": torch.get_num_threads(), "python": platform.python_version()}}  # fmt: skip
    common.write_json(suite, payload)
    print(report(payload))


if __name__ == "__main__":
    main()
