"""The search's training runs through the recipe runner: the teacher (the recipe's finetune stages), each
finalist's full HomoDistil run (checkpointed: a killed search resumes it), and the chosen model's quantize stage;
plus the validation metric of every quantization x runtime variant of a trained shape."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from .. import evaluation
from ..quant import QuantizationConfig, quantize
from ..recipes import Recipe, parse_recipe
from ..runner import run_recipe
from ..runner.context import HEADS, Context
from ..runner.data import prepare_data
from ..runner.models import check_teacher_task, load_processor, load_teacher
from ..validation import RecipeError
from .config import SearchConfig
from .screen import homodistil_fields
from .space import Shape, export_for_ort

logger = logging.getLogger(__name__)
CALIBRATION_ROWS = 256  # as the quantize stage's default calibration_samples


def base_raw(recipe: Recipe) -> dict:
    """The recipe as a dict (defaults filled in) without its stages."""
    raw = recipe.resolved()
    raw.pop("stages")
    return raw


def check_input_recipe(recipe: Recipe) -> None:
    """The recipe given to the search holds the teacher, the data and at most finetune stages (the search builds
    the compression stages itself)."""
    other = [s.name for s in recipe.stages if not s.spec.becomes_teacher and s.spec.run is not None]
    if other:
        raise RecipeError(
            f"recipe {recipe.name!r}: `hf-compress auto` builds the compression stages itself; keep only the stages "
            f"that make the teacher (finetune) and remove {other}."
        )


def teacher_stages(recipe: Recipe) -> list[dict]:
    """The resolved stages that make the teacher (finetune)."""
    resolved = recipe.resolved()["stages"]
    return [raw for raw, stage in zip(resolved, recipe.stages) if stage.spec.becomes_teacher]


def prepare_teacher(recipe: Recipe, out: Path) -> str:
    """The teacher's folder: the recipe's own teacher, or the output of its finetune stages (run by the runner
    into ``out/teacher``; finished stages are skipped on a second run)."""
    stages = teacher_stages(recipe)
    if not stages:
        return recipe.teacher.source
    # the recipe's own finetune stages as they are: the teacher's test metric is the teacher's (reported as such;
    # no choice depends on it), and the replayed recipe makes exactly this teacher
    raw = {**base_raw(recipe), "stages": stages}
    run_recipe(parse_recipe(raw), out / "teacher")
    return str(out / "teacher" / f"{len(stages) - 1:02d}-{stages[-1]['name']}")


def context(recipe: Recipe, teacher_dir: str, out: Path, test: bool = False) -> Context:
    """A runner context over the trained teacher and the recipe's data; without ``test`` the test split is not
    loaded (every choice of the search is made on the validation split)."""
    raw = base_raw(recipe)
    raw["teacher"] = {**raw["teacher"], "source": teacher_dir}
    if not test:
        raw["data"] = {**raw["data"], "test_split": None}
    raw["stages"] = [{"method": "evaluate"}]
    ctx = Context(recipe=parse_recipe(raw), output_dir=out)
    check_teacher_task(ctx)
    architectures = ctx.teacher_config.architectures if ctx.teacher_config is not None else None
    if not any(a.endswith(HEADS) for a in architectures or []):
        raise RecipeError(
            f"teacher {recipe.teacher.source!r} has no trained classification head to search against; add a "
            "finetune stage to the recipe (as recipes/quickstart.yaml does) or give a fine-tuned teacher."
        )
    load_processor(ctx)
    prepare_data(ctx)
    load_teacher(ctx)
    return ctx


def final_raw(recipe: Recipe, teacher_dir: str, config: SearchConfig, shape: Shape | None, quant: str) -> dict:
    """The recipe of one final run: from the trained teacher, HomoDistil to ``shape`` (None: the teacher's shape,
    quantization only), then ``quant``; no test split (the search reads it once, at the end)."""
    raw = base_raw(recipe)
    raw["teacher"] = {**raw["teacher"], "source": teacher_dir}
    raw["data"] = {**raw["data"], "test_split": None}
    raw["stages"] = stages_for(config, shape, quant)
    return raw


def stages_for(config: SearchConfig, shape: Shape | None, quant: str) -> list[dict]:
    stages = []
    if shape is not None:
        fields = homodistil_fields(config, shape, config.final_steps, config.final_prune_fraction)
        stages.append({"method": "homodistil", "name": "homodistil", **fields})
    if quant != "none":
        stages.append({"method": "quantize", "name": quant.replace("_", "-"), "quant_method": quant})
    if not stages:
        stages.append({"method": "evaluate"})
    return stages


def replay_raw(recipe: Recipe, config: SearchConfig, shape: Shape | None, quant: str) -> dict:
    """A recipe that `hf-compress run` replays to the chosen model: the original teacher, data and finetune
    stages, then the chosen stages."""
    raw = base_raw(recipe)
    raw["name"] = f"{recipe.name}-auto"
    chosen = [s for s in stages_for(config, shape, quant) if s["method"] != "evaluate"]
    raw["stages"] = teacher_stages(recipe) + chosen or stages_for(config, None, "none")  # the teacher as it is
    return raw


def train_final(recipe: Recipe, teacher_dir: str, config: SearchConfig, shape: Shape, out: Path) -> Path:
    """The finalist's full HomoDistil run (``out/runs/KEY``); returns its stage folder."""
    run_recipe(parse_recipe(final_raw(recipe, teacher_dir, config, shape, "none")), out / "runs" / shape.key)
    return out / "runs" / shape.key / "00-homodistil"


def build_chosen(recipe: Recipe, teacher_dir: str, config: SearchConfig, shape: Shape | None, quant: str,
                 out: Path) -> Path:  # fmt: skip
    """The chosen model's folder, made by the runner (the finished HomoDistil stage is reused)."""
    raw = final_raw(recipe, teacher_dir, config, shape, quant)
    key = shape.key if shape is not None else "teacher"
    if raw["stages"] == [{"method": "evaluate"}]:
        return Path(teacher_dir)
    run_recipe(parse_recipe(raw), out / "runs" / key)
    last = raw["stages"][-1]
    return out / "runs" / key / f"{len(raw['stages']) - 1:02d}-{last['name']}"


def variant_metrics(ctx: Context, model, config: SearchConfig, folder: Path, metric: str) -> dict[str, float]:
    """``{"QUANT/RUNTIME": validation metric}`` of every variant of a trained ``model``; cached in
    ``folder/variants.json`` (a resumed search does not measure them again)."""
    cache = folder / "variants.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    train = ctx.data["train"]
    calibration = train.select(range(min(CALIBRATION_ROWS, len(train))))
    for quant in config.quant_methods:
        todo = [r for r in config.runtimes if f"{quant}/{r}" not in done]
        if not todo:
            continue
        variant = copy.deepcopy(model)
        if quant != "none":
            settings = QuantizationConfig(method=quant)
            variant = quantize(variant, settings, calibration if settings.needs_calibration else None,
                               collate_fn=ctx.collator)  # fmt: skip
        for runtime in todo:
            done[f"{quant}/{runtime}"] = _metric(ctx, variant, runtime, folder / f"onnx-{quant}", metric)
        folder.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(done, indent=1))
    return done


def _metric(ctx: Context, model, runtime: str, onnx_dir: Path, metric: str) -> float:
    if runtime == "onnxruntime":
        model, _ = export_for_ort(model, onnx_dir, processor=ctx.processor)
    return evaluation.task_metric(model, ctx.data["validation"], metric, ctx.collator,
                                  ctx.recipe.data.trust_remote_metric)  # fmt: skip
