"""What a run reports: each stage's measurements (task metric, size, speed against the teacher) and the summary
table of all of them (summary.md, summary.json)."""

from __future__ import annotations

import json
import logging

from .. import evaluation
from ..metrics import higher_is_better, percent_of_teacher
from .context import Context

logger = logging.getLogger(__name__)
# summary.json: {"schema": SUMMARY_SCHEMA, "teacher": row, "stages": [row, ...]}; a row is what `measure` returns
# (stage, the task metric, params_m, size_mb, latency_{8x128,1x128} as ratios to the teacher and their
# latency_control_* (the teacher against itself)) plus method, folder and maybe a note. The benchmarks' recipe
# suite stores these rows as they are; a change to them bumps the schema.
SUMMARY_SCHEMA = 1


def measure(ctx: Context, model, stage_name: str, latency_repeats: int = 10) -> dict:
    test = ctx.data.get("test") or ctx.data["validation"]
    metric = ctx.recipe.data.metric
    teacher = ctx.teacher
    latency = evaluation.latency_ratios(teacher, {"model": model}, reps=latency_repeats)
    return {
        "stage": stage_name,
        metric: evaluation.task_metric(model, test, metric, ctx.collator, ctx.recipe.data.trust_remote_metric),
        "params_m": evaluation.count_params(model) / 1e6,
        "size_mb": evaluation.weights_size_mb(model),
        "latency_8x128": latency["model"]["8x128"],
        "latency_1x128": latency["model"]["1x128"],
        "latency_control_8x128": latency[evaluation.CONTROL]["8x128"],  # the teacher vs itself: must be ~1.00
        "latency_control_1x128": latency[evaluation.CONTROL]["1x128"],
    }


def write_summary(ctx: Context, baseline: dict) -> None:
    metric = ctx.recipe.data.metric
    rows = [{**baseline, "stage": "teacher", "method": "-"}] + ctx.results
    header = f"{metric} ({'higher' if higher_is_better(metric) else 'lower'} is better)"
    lines = [f"# {ctx.recipe.name}: summary", "",
             f"| stage | method | {header} | % of teacher | params (M) | MB | speed-up 8x128 | speed-up 1x128 |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        share = percent_of_teacher(metric, row[metric], baseline[metric])
        lines.append(
            f"| {row['stage']} | {row['method']} | {row[metric]:.4f} | {share:.1f} | "
            f"{row['params_m']:.2f} | {row['size_mb']:.1f} | "
            f"{evaluation.format_speedup(row['latency_8x128'], row.get('latency_control_8x128'))} | "
            f"{evaluation.format_speedup(row['latency_1x128'], row.get('latency_control_1x128'))} |"
        )
    lines += ["", evaluation.control_summary(rows)]
    notes = [f"- {row['stage']}: {row['note']}" for row in rows if row.get("note")]
    lines += ["", *notes] if notes else []
    text = "\n".join(lines) + "\n"
    (ctx.output_dir / "summary.md").write_text(text)
    (ctx.output_dir / "summary.json").write_text(
        json.dumps({"schema": SUMMARY_SCHEMA, "teacher": baseline, "stages": ctx.results}, indent=2)
    )
    logger.info("summary written to %s", ctx.output_dir / "summary.md")
