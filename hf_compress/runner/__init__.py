"""Run a recipe: every stage into its own folder, atomically, skipping finished stages and resuming
interrupted ones; a model card per stage and a summary of all of them.

`run_recipe` is the public entry point (the CLI's ``hf-compress run`` calls it); the jobs it strings together live
next to it: ``data`` (the recipe's data), ``models`` (teacher, processor, stage outputs), ``summary`` (measurements
and the summary table), and `hf_compress.store` (fingerprints, atomic saves, output checks)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import yaml
from transformers import set_seed

from ..card import write_model_card
from ..lock import held_by, in_use_error, output_lock
from ..recipes import Recipe
from ..store import DONE_NAME, check_outputs, prepare_work_dir, read_done, save_atomically, stage_fingerprint
from ..validation import RecipeError, inside, public
from .context import Context
from .data import prepare_data
from .models import check_teacher_task, load_processor, load_stage_output, load_teacher
from .summary import measure, write_summary

__all__ = ["Context", "DONE_NAME", "measure", "run_recipe", "save_atomically", "write_summary"]
logger = logging.getLogger(__name__)


def run_recipe(recipe: Recipe, output_dir: str | Path, force: bool = False) -> list[dict]:
    """Run every stage of ``recipe`` under ``output_dir``; returns the per-stage measurements. One run at a time
    per output folder (`output_lock`); nothing is created before the inputs and outputs are checked."""
    output_dir = Path(output_dir).expanduser()
    try:
        check_outputs(recipe, output_dir.resolve())
    except RecipeError:
        holder = held_by(output_dir)  # a live run's half-written folders: say the folder is busy, not foreign
        if holder:
            raise in_use_error(output_dir, holder) from None
        raise
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".hf_compress_write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"Output folder {output_dir} is not writable ({err.strerror or err}); choose another --output-dir."
        ) from err
    output_dir = output_dir.resolve()
    with output_lock(output_dir):
        return _run_locked(recipe, output_dir, force)


def _run_locked(recipe: Recipe, output_dir: Path, force: bool) -> list[dict]:
    check_outputs(recipe, output_dir)
    for stale in ("summary.md", "summary.json"):  # rewritten at the end: never left listing a removed folder
        (output_dir / stale).unlink(missing_ok=True)
    set_seed(recipe.seed)
    ctx = Context(recipe=recipe, output_dir=output_dir)
    check_teacher_task(ctx)
    load_processor(ctx)
    prepare_data(ctx)
    load_teacher(ctx)
    ctx.current = ctx.teacher
    demo = recipe.teacher.source == "demo-minilm"
    base_model = "sentence-transformers/all-MiniLM-L6-v2" if demo else public(recipe.teacher.source, output_dir)
    resolved = yaml.safe_dump(public(recipe.resolved(), output_dir), sort_keys=False)
    (output_dir / "recipe.resolved.yaml").write_text(resolved)
    baseline = None
    for index, stage in enumerate(recipe.stages):
        folder = inside(output_dir, output_dir / f"{index:02d}-{stage.name}")
        spec = stage.spec
        if spec.run is None:  # measurements only (the summary's teacher row)
            continue
        fingerprint = stage_fingerprint(recipe, index)
        done = read_done(folder) if not force else None
        if done is not None and done.get("fingerprint") == fingerprint:
            logger.info("stage %d %s: finished earlier, skipped (--force redoes it)", index, stage.name)
            model = load_stage_output(folder, recipe.data.task)
            record = done["measurements"]
            if spec.becomes_teacher:
                ctx.teacher, baseline = model, None
        else:
            logger.info("stage %d %s (%s)", index, stage.name, stage.method)
            work = output_dir / f".work-{index:02d}-{stage.name}"
            if spec.trains:  # checkpoints of an interrupted run of this very stage are resumed
                prepare_work_dir(output_dir, work, fingerprint, force)
            if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):  # fail before training, not after
                raise PermissionError(f"{folder} is read-only; make it writable (chmod -R u+w) to redo the stage.")
            model = spec.run(ctx, stage, work)
            if spec.becomes_teacher:  # e.g. the fine-tuned model is the teacher of every later stage
                ctx.teacher, baseline = model, None
            baseline = baseline or measure(ctx, ctx.teacher, "teacher")
            record = measure(ctx, model, stage.name)
            if spec.note is not None:
                try:
                    record["note"] = spec.note(model)
                except Exception as err:  # a note is a description: never worth the stage's output
                    logger.warning("stage %s: its card note failed (%s: %s); saved without it", stage.name,
                                   type(err).__name__, err)  # fmt: skip
            card = write_model_card(recipe, stage, record, baseline, base_model, output_dir, earlier=ctx.results)
            marker = json.dumps({"fingerprint": fingerprint, "measurements": record}, indent=2)
            save_atomically(model, ctx.processor, folder,
                            {"README.md": card, DONE_NAME: marker, "recipe.resolved.yaml": resolved})  # fmt: skip
            if work.exists():
                shutil.rmtree(inside(output_dir, work), ignore_errors=True)
        ctx.current = model
        ctx.results.append({**record, "method": stage.method, "folder": folder.name})
    write_summary(ctx, baseline or measure(ctx, ctx.teacher, "teacher"))
    return ctx.results
