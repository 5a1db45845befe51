"""Run a recipe: every stage into its own folder, atomically, skipping finished stages and resuming
interrupted ones; a model card per stage and a summary of all of them."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from datasets import DatasetDict, load_dataset
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    set_seed,
)

from . import evaluation
from .card import write_model_card
from .data import demo_model_path, load_fashion_mnist, load_rotten_tomatoes
from .data.labels import align_with_teacher_head, check_text_column, resolve_labels
from .lock import held_by, in_use_error, output_lock
from .metrics import higher_is_better, percent_of_teacher
from .recipes import Recipe
from .store import (
    DONE_NAME,
    check_outputs,
    prepare_work_dir,
    read_done,
    save_atomically,
    stage_fingerprint,
)
from .validation import RecipeError, check_task_matches, check_tokenizer, inside, looks_local, public

logger = logging.getLogger(__name__)
_HEADS = ("ForSequenceClassification", "ForImageClassification")


@dataclass
class Context:
    recipe: Recipe
    output_dir: Path
    data: DatasetDict | None = None
    processor: Any = None
    collator: Any = None
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    teacher: Any = None  # the current teacher (after a finetune stage: the fine-tuned model)
    teacher_dir: str | None = None
    teacher_config: Any = None  # the saved config of a teacher loaded from a folder or the Hub
    current: Any = None  # the model the next stage compresses
    current_dir: str | None = None
    results: list[dict] = field(default_factory=list)


# ---- data and models ---------------------------------------------------------------------------------------


def _raw_data(spec) -> DatasetDict:
    if spec.source == "demo-rotten-tomatoes":
        return load_rotten_tomatoes(seed=0)
    if spec.source == "demo-fashion-mnist":
        data = load_fashion_mnist()
        split = data["train"].train_test_split(test_size=5000, seed=0)  # validation carved from train
        return DatasetDict(train=split["train"], validation=split["test"], test=data["test"])
    if spec.source == "files":
        suffix = Path(next(iter(spec.files.values()))).suffix.lstrip(".")
        builder = {"csv": "csv", "json": "json", "jsonl": "json", "parquet": "parquet"}.get(suffix)
        if builder is None:
            raise RecipeError(f"data.files must be csv, json, jsonl or parquet files, got .{suffix}.")
        missing = {k: v for k, v in spec.files.items() if not Path(v).expanduser().is_file()}
        if missing:
            raise RecipeError(f"data.files {missing} do not exist; fix the path(s).")
        for key, path in spec.files.items():
            if builder in ("csv", "json") and _data_lines(Path(path).expanduser(), 2) < (2 if builder == "csv" else 1):
                what = "a header and no data rows" if builder == "csv" else "no rows"
                raise RecipeError(f"data.files.{key} ({Path(path).name}) has {what}; add rows or fix the path.")
        try:
            return load_dataset(builder, data_files=spec.files)
        except Exception as err:  # an empty or malformed file: the datasets error names neither field nor fix
            raise RecipeError(
                f"data.files {spec.files} cannot be read as {builder} ({type(err).__name__}: {err}); each file needs "
                "a header row and at least one data row."
            ) from err
    try:
        return load_dataset(spec.source, spec.config_name)  # a Hub dataset id
    except Exception as err:
        raise RecipeError(f"data.source {spec.source!r} cannot be loaded ({type(err).__name__}: {err}).") from err


def _data_lines(path: Path, enough: int) -> int:
    """How many non-blank lines ``path`` has, counting up to ``enough``."""
    count = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            count += bool(line.strip())
            if count >= enough:
                break
    return count


def prepare_data(ctx: Context) -> None:
    spec = ctx.recipe.data
    raw = _raw_data(spec)
    splits = {"train": spec.train_split, "validation": spec.eval_split, "test": spec.test_split}
    fields = {"train": "train_split", "validation": "eval_split", "test": "test_split"}
    data = {}
    for key, split in splits.items():
        if split is None:
            continue
        if split not in raw:
            raise RecipeError(
                f"data has no split {split!r}; it has {list(raw)}. Set data.{fields[key]} to one of them."
            )
        limit = {"train": spec.train_limit, "validation": spec.eval_limit, "test": spec.test_limit}[key]
        data[key] = raw[split].select(range(min(limit, len(raw[split])))) if limit else raw[split]
        if len(data[key]) == 0:
            raise RecipeError(
                f"data split {split!r} (data.{fields[key]}) has no rows; give it data rows under the header."
            )
    columns = data["train"].column_names
    needed = [spec.label_column] + ([spec.text_column] if spec.task == "text-classification" else [spec.image_column])
    if spec.text_pair_column and spec.task == "text-classification":
        needed.append(spec.text_pair_column)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise RecipeError(
            f"data is missing column(s) {missing}; it has {columns}. Set data.text_column / label_column."
        )
    if spec.task == "text-classification":
        for column in filter(None, (spec.text_column, spec.text_pair_column)):
            check_text_column(data, column, "text_pair_column" if column == spec.text_pair_column else "text_column")
    data, ctx.num_labels, ctx.id2label = resolve_labels(data, spec.label_column, ctx.recipe.teacher.num_labels)
    saved = ctx.teacher_config
    if saved is not None and any(a.endswith(_HEADS) for a in saved.architectures or []) and ctx.num_labels > 1:
        data, ctx.id2label = align_with_teacher_head(data, spec.label_column, ctx.id2label, saved.id2label,
                                                     ctx.recipe.teacher.label_order)  # fmt: skip
    if spec.task == "text-classification":
        tokenizer = ctx.processor

        def encode(batch):
            pair = batch[spec.text_pair_column] if spec.text_pair_column else None
            return tokenizer(batch[spec.text_column], pair, truncation=True, max_length=spec.max_length)

        ctx.collator = DataCollatorWithPadding(tokenizer)
    elif ctx.processor is not None:  # a Hub / local ViT with its image processor (PIL images)
        processor = ctx.processor

        def encode(batch):
            images = [img.convert("RGB") if hasattr(img, "convert") else img for img in batch[spec.image_column]]
            return {"pixel_values": processor(images=images, return_tensors="np")["pixel_values"]}

    else:  # uint8 arrays (the Fashion-MNIST demo), scaled to [-1, 1]

        def encode(batch):
            images = np.asarray(batch[spec.image_column], dtype=np.float32) / 255.0
            if images.ndim == 3:
                images = images[:, None]
            return {"pixel_values": (images - 0.5) / 0.5}

    encoded = {}
    for key, ds in data.items():
        ds = ds.map(encode, batched=True, remove_columns=[c for c in ds.column_names if c != spec.label_column])
        encoded[key] = ds.rename_column(spec.label_column, "labels") if spec.label_column != "labels" else ds
        if spec.task == "image-classification":
            encoded[key] = encoded[key].with_format("torch")
    ctx.data = DatasetDict(encoded)


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
        has_head = any(a.endswith(_HEADS) for a in saved.architectures or [])
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


# ---- stages --------------------------------------------------------------------------------------------------


def _load_stage_output(path: Path, task: str):
    auto = AutoModelForSequenceClassification if task == "text-classification" else AutoModelForImageClassification
    try:
        return auto.from_pretrained(str(path))
    except Exception as err:
        raise RecipeError(
            f"The finished stage output {path} cannot be loaded ({type(err).__name__}: {err}); it is corrupt. "
            "Re-run with --force (or delete the folder) to redo the stage."
        ) from err


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
            print(f"[hf-compress] stage {index} {stage.name}: finished earlier, skipped (--force redoes it)")
            model = _load_stage_output(folder, recipe.data.task)
            record = done["measurements"]
            if spec.becomes_teacher:
                ctx.teacher, baseline = model, None
        else:
            print(f"[hf-compress] stage {index} {stage.name} ({stage.method})", flush=True)
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
    text = "\n".join(lines) + "\n"
    (ctx.output_dir / "summary.md").write_text(text)
    (ctx.output_dir / "summary.json").write_text(json.dumps({"teacher": baseline, "stages": ctx.results}, indent=2))
    print(text)
