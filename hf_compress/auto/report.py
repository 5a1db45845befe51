"""What a search hands back in ``OUTPUT/auto/``: the chosen model (``model/``, and ``model-onnx/`` when it runs on
ONNX Runtime), ``recipe.yaml`` (replays it with ``hf-compress run``), ``summary.json``, and the Pareto table
(``pareto.md``) and plot (``pareto.png``) of every candidate measured."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import yaml

from .. import evaluation
from ..runner.models import load_stage_output
from ..validation import public
from . import finals
from .choose import pareto, standard_error
from .space import Shape, export_for_ort

logger = logging.getLogger(__name__)
AUTO_SCHEMA = 1


def dumps(value) -> str:
    return json.dumps(value, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v))


def _shape_of(row: dict) -> Shape | None:
    if row["stage"] == "teacher-shape":
        return None
    return Shape(row["layers"], row["heads"], row["hidden"], row["ffn"])


def _deployable(search, folder: Path, row: dict):
    model = load_stage_output(folder, search.recipe.data.task)
    if row["runtime"] != "onnxruntime":
        return model, None
    return export_for_ort(search.out / "model", search.out / "model-onnx")


def write_outputs(search, picked: dict, met: bool) -> dict:
    config, out = search.config, search.out
    shape = _shape_of(picked)
    search.say(f"chosen {picked['key']} (validation {picked['validation']:.4f}); building it")
    folder = finals.build_chosen(search.recipe, search.teacher_dir, config, shape, picked["quant"], out)
    model_dir = out / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(folder, model_dir)
    deployable, export = _deployable(search, folder, picked)
    search.say("timing the chosen model against the teacher")
    shapes = [tuple(int(x) for x in s.split("x")) for s in config.shapes]
    ratios = evaluation.latency_ratios(search.ctx.teacher, {"chosen": deployable}, shapes=shapes,
                                       reps=2 * config.latency_repeats)  # fmt: skip
    search.say("test split: teacher and chosen model (read once, for this report)")
    test_ctx = finals.context(search.recipe, search.teacher_dir, out, test=True)
    test = test_ctx.data.get("test")
    metric, trust = search.metric, search.recipe.data.trust_remote_metric
    teacher_test = evaluation.task_metric(test_ctx.teacher, test, metric, test_ctx.collator, trust) if test else None
    chosen_test = evaluation.task_metric(deployable, test, metric, test_ctx.collator, trust) if test else None
    replay = finals.replay_raw(search.recipe, config, shape, picked["quant"])
    # local paths as the search was given them: the recipe replays on this machine
    header = ("# Replays the model `hf-compress auto` chose (same teacher, data and seed):\n"
              f"#   hf-compress run {out / 'recipe.yaml'} --output-dir OUT\n")  # fmt: skip
    (out / "recipe.yaml").write_text(header + yaml.safe_dump(replay, sort_keys=False))
    summary = _summary(search, picked, met, ratios, teacher_test, chosen_test, export)
    (out / "summary.json").write_text(dumps(summary))
    (out / "pareto.md").write_text(pareto_markdown(search, summary))
    plot(search.rows, search.teacher_metric, search.floor, config.objective_shape, picked, out / "pareto.png")
    search.say(f"done: {out / 'summary.json'}")
    return summary


def _summary(search, picked, met, ratios, teacher_test, chosen_test, export) -> dict:
    config, metric = search.config, search.metric
    speedups = {s: 1 / ratios["chosen"][s] for s in config.shapes}
    control = {s: ratios[evaluation.CONTROL][s] for s in config.shapes}
    rows_n = len(search.ctx.data["validation"])
    return {
        "schema": AUTO_SCHEMA,
        "metric": metric,
        "teacher": {
            f"{metric}_validation": search.teacher_metric,
            f"{metric}_test": teacher_test,
            "path": public(search.teacher_dir, search.out),
        },
        "constraint": {
            "description": config.describe(),
            "max_drop": config.max_drop,
            "min_speedup": config.min_speedup,
            "max_latency_ms": config.max_latency_ms,
            "floor_validation": search.floor,
            "objective_shape": config.objective_shape,
            "met": met,
        },
        "chosen": {
            "path": "model",
            "onnx_path": "model-onnx" if export is not None else None,
            "key": picked["key"],
            "runtime": picked["runtime"],
            "quant": picked["quant"],
            "shape": {k: picked[k] for k in ("layers", "heads", "hidden", "ffn")},
            f"{metric}_validation": picked["validation"],
            f"{metric}_test": chosen_test,
            "validation_standard_error": standard_error(picked["validation"], rows_n),
            "speedup": speedups,
            "speedup_control": {s: 1 / c for s, c in control.items()},
            "latency_ms": {s: ratios["chosen"][f"{s}_ms"] for s in config.shapes},
            "export_check": _export_check(export),
        },
        "noise": _noise_note(search, rows_n),
        "budget_s": config.budget_s,
        "elapsed_s": time.monotonic() - search.start,
        "training_steps": search.steps,
        "validation_rows": rows_n,
        "not_tried": search.not_tried,
        "not_screened": search.skipped,
        "candidates": search.rows,
        "pareto": [r["key"] for r in pareto(search.rows)],
    }


def _noise_note(search, rows: int) -> str | None:
    """A sentence when the validation split is too small to tell the floor from the teacher: its standard error is
    more than half the allowed drop, so 'meets the constraint' is within noise."""
    if search.floor is None:
        return None
    error = standard_error(search.teacher_metric, rows)
    if error <= (search.teacher_metric - search.floor) / 2:
        return None
    return (f"The validation split ({rows} rows) has a standard error of {100 * error:.1f} points, more than half the "
            f"allowed drop of {100 * (search.teacher_metric - search.floor):.1f}: whether the chosen model meets the "
            "constraint is within noise; use a larger validation split.")  # fmt: skip


def _export_check(export) -> dict | None:
    if export is None:
        return None
    keep = ("precision", "passed", "max_abs_diff", "fidelity", "num_samples", "near_ties", "fused_ops", "onnx_mb")
    return {name: getattr(export, name) for name in keep}


def _fmt(value, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def pareto_markdown(search, summary: dict) -> str:
    config, metric = search.config, search.metric
    chosen, front = summary["chosen"], set(summary["pareto"])
    shapes = config.shapes
    lines = [f"# hf-compress auto: {search.recipe.name}", "",
             f"Constraint: {config.describe()} (validation floor {_fmt(search.floor)}; teacher "
             f"{_fmt(search.teacher_metric)}). Chosen: **{chosen['key']}**, validation "
             f"{_fmt(chosen[metric + '_validation'])}"
             f", test {_fmt(chosen[metric + '_test'])} (teacher test {_fmt(summary['teacher'][metric + '_test'])}); "
             + ", ".join(f"{chosen['speedup'][s]:.2f}x at {s}" for s in shapes) + " (re-measured).", "",
             "Speed-ups are the untrained cut of each shape timed against the torch fp32 teacher on this machine; "
             "`screen` rows are short runs (their metric is not comparable to the finals').", "",
             f"| candidate | stage | steps | {metric} (validation) | screen | "
             + " | ".join(f"speed-up {s}" for s in shapes) + " | Pareto |",
             "|---|---|---|---|---|" + "---|" * len(shapes) + "---|"]  # fmt: skip
    for row in sorted(search.rows, key=lambda r: -(r["speedup"] if not math.isnan(r["speedup"]) else 0)):
        speeds = " | ".join(_fmt(row.get("speedups", {}).get(s), 2) for s in shapes)
        mark = "chosen" if row["key"] == chosen["key"] else ("yes" if row["key"] in front else "")
        lines.append(f"| {row['key']} | {row['stage']} | {row['steps']} | {_fmt(row['validation'])} | "
                     f"{_fmt(row.get('screen_validation'))} | {speeds} | {mark} |")  # fmt: skip
    if summary["noise"]:
        lines += ["", summary["noise"]]
    if summary["not_tried"]:
        lines += ["", "Not tried within the budget: " + ", ".join(summary["not_tried"]) + "."]
    if summary["not_screened"]:
        lines += ["", "Not screened: " + "; ".join(f"{s['key']} ({s['why']})" for s in summary["not_screened"]) + "."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], teacher: float, floor: float | None, shape: str, picked: dict, path: Path) -> None:
    """Validation metric against speed-up at the objective shape; skipped (with a log line) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no pareto.png (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for runtime, marker in (("torch", "o"), ("onnxruntime", "s")):
        points = [r for r in rows if r["validation"] is not None and r["runtime"] == runtime]
        ax.scatter([r["speedup"] for r in points], [r["validation"] for r in points], marker=marker, label=runtime)
    ax.scatter([picked["speedup"]], [picked["validation"]], s=160, facecolors="none", edgecolors="red",
               label="chosen")  # fmt: skip
    ax.axhline(teacher, color="gray", linestyle=":", label="teacher")
    if floor is not None:
        ax.axhline(floor, color="red", linestyle="--", label="floor")
    ax.set_xlabel(f"speed-up over the torch fp32 teacher at {shape}")
    ax.set_ylabel("validation metric")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
