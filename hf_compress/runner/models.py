"""A recipe's models: the teacher (a folder, a Hub id, the demo MiniLM, or a config), its processor, and the saved
output of a finished stage, each checked against the recipe's task and data."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from ..data import demo_model_path
from ..validation import RecipeError, check_task_matches, check_tokenizer, looks_local
from .context import HEADS, Context

logger = logging.getLogger(__name__)


def load_teacher(ctx: Context) -> None:
    spec, data = ctx.recipe.teacher, ctx.recipe.data
    labels = {"id2label": ctx.id2label, "label2id": {v: k for k, v in ctx.id2label.items()}} if ctx.id2label else {}
    auto = (
        AutoModelForSequenceClassification if data.task == "text-classification" else AutoModelForImageClassification
    )
    if spec.source == "config":
        if not spec.config or "model_type" not in spec.config:
            raise ValueError("teacher source 'config' needs teacher.config with a model_type (e.g. vit).")
        values = {k: v for k, v in spec.config.items() if k != "model_type"}
        config = AutoConfig.for_model(spec.config["model_type"], num_labels=ctx.num_labels, **values, **labels)
        torch.manual_seed(ctx.recipe.seed)
        ctx.teacher = auto.from_config(config)
    else:
        path = _teacher_path(ctx)
        saved = AutoConfig.from_pretrained(path)
        has_head = any(a.endswith(HEADS) for a in saved.architectures or [])
        if has_head and saved.num_labels != ctx.num_labels:
            raise RecipeError(
                f"teacher.source {spec.source!r}: its classification head has {saved.num_labels} labels but the data "
                f"has {ctx.num_labels} classes; fix data.label_column / the labels, or use a teacher without a head."
            )
        try:
            ctx.teacher = auto.from_pretrained(path, num_labels=ctx.num_labels, **labels)
        except SafetensorError as err:
            raise RecipeError(
                f"teacher.source {spec.source!r}: its weights file is truncated or corrupt ({err}); copy or download "
                "the model folder again."
            ) from err
        except OSError as err:
            raise RecipeError(f"teacher.source {spec.source!r} cannot be loaded ({err}); fix the path or id.") from err
        ctx.teacher_dir = path
    limit = getattr(ctx.teacher.config, "max_position_embeddings", None)
    if data.task == "text-classification" and limit and data.max_length > limit:
        raise RecipeError(
            f"data.max_length={data.max_length} exceeds the teacher's max_position_embeddings={limit}; set "
            f"data.max_length <= {limit}."
        )


def _teacher_path(ctx: Context) -> str:
    source = ctx.recipe.teacher.source
    if source == "demo-minilm":
        return demo_model_path()
    if looks_local(source) and not Path(source).expanduser().is_dir():
        raise RecipeError(f"teacher.source {source!r} is not an existing directory; fix the path.")
    return source


def check_teacher_task(ctx: Context) -> None:
    """A text teacher for an image task (or the reverse) fails here, before any data or weights are loaded."""
    spec, task = ctx.recipe.teacher, ctx.recipe.data.task
    if spec.source == "config":
        return  # checked at parse time
    try:
        config = AutoConfig.from_pretrained(_teacher_path(ctx))
    except OSError as err:
        raise RecipeError(f"teacher.source {spec.source!r} cannot be loaded ({err}); fix the path or id.") from err
    check_task_matches(config, task, f"teacher.source {spec.source!r}", f" ({config.model_type})")
    ctx.teacher_config = config


def load_processor(ctx: Context) -> None:
    """The teacher's tokenizer (text) or image processor (vision; none for a model built from a config)."""
    spec = ctx.recipe.teacher
    if spec.source == "config":
        return
    path = _teacher_path(ctx)
    auto = AutoTokenizer if ctx.recipe.data.task == "text-classification" else AutoImageProcessor
    try:
        ctx.processor = auto.from_pretrained(path)
    except OSError as err:
        raise RecipeError(
            f"teacher.source {spec.source!r} has no loadable {auto.__name__[4:]} ({err}); save it with the model."
        ) from err
    if ctx.recipe.data.task == "text-classification":
        if ctx.teacher_config is None:  # called on its own, not by run_recipe (which checks the task first)
            check_teacher_task(ctx)
        check_tokenizer(ctx.processor, ctx.teacher_config, f"teacher.source {spec.source!r}", path)


def load_stage_output(path: Path, task: str):
    auto = AutoModelForSequenceClassification if task == "text-classification" else AutoModelForImageClassification
    try:
        return auto.from_pretrained(str(path))
    except Exception as err:
        raise RecipeError(
            f"The finished stage output {path} cannot be loaded ({type(err).__name__}: {err}); it is corrupt. "
            "Re-run with --force (or delete the folder) to redo the stage."
        ) from err
