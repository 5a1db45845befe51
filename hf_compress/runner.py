"""Run a recipe: every stage into its own folder, atomically, skipping finished stages and resuming
interrupted ones; a model card per stage and a summary of all of them."""

from __future__ import annotations

import copy
import hashlib
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
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from . import evaluation
from .card import write_model_card
from .data import demo_model_path, load_fashion_mnist, load_rotten_tomatoes
from .distill import DistillationTrainer, make_student
from .prune import HomoDistilTrainer
from .quant import quantize
from .recipes import Recipe, Stage

logger = logging.getLogger(__name__)
DONE_NAME = "hf_compress_stage.json"


@dataclass
class Context:
    recipe: Recipe
    output_dir: Path
    data: DatasetDict | None = None
    processor: Any = None
    collator: Any = None
    num_labels: int = 2
    teacher: Any = None  # the current teacher (after a finetune stage: the fine-tuned model)
    teacher_dir: str | None = None
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
            raise ValueError(f"data files must be csv, json, jsonl or parquet, got .{suffix}.")
        return load_dataset(builder, data_files=spec.files)
    return load_dataset(spec.source, spec.config_name)  # a Hub dataset id


def prepare_data(ctx: Context) -> None:
    spec = ctx.recipe.data
    raw = _raw_data(spec)
    splits = {"train": spec.train_split, "validation": spec.eval_split, "test": spec.test_split}
    data = {}
    for key, split in splits.items():
        if split is None:
            continue
        if split not in raw:
            raise ValueError(f"data has no split {split!r}; it has {list(raw)}. Set data.{key}_split.")
        limit = {"train": spec.train_limit, "validation": spec.eval_limit, "test": spec.test_limit}[key]
        data[key] = raw[split].select(range(min(limit, len(raw[split])))) if limit else raw[split]
    columns = data["train"].column_names
    needed = [spec.label_column] + ([spec.text_column] if spec.task == "text-classification" else [spec.image_column])
    if spec.text_pair_column and spec.task == "text-classification":
        needed.append(spec.text_pair_column)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(
            f"data is missing column(s) {missing}; it has {columns}. Set data.text_column / label_column."
        )
    labels = data["train"].features[spec.label_column]
    ctx.num_labels = ctx.recipe.teacher.num_labels or (
        labels.num_classes if hasattr(labels, "num_classes") else len(set(data["train"][spec.label_column]))
    )
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
    auto = (
        AutoModelForSequenceClassification if data.task == "text-classification" else AutoModelForImageClassification
    )
    if spec.source == "config":
        if not spec.config or "model_type" not in spec.config:
            raise ValueError("teacher source 'config' needs teacher.config with a model_type (e.g. vit).")
        values = {k: v for k, v in spec.config.items() if k != "model_type"}
        config = AutoConfig.for_model(spec.config["model_type"], num_labels=ctx.num_labels, **values)
        torch.manual_seed(ctx.recipe.seed)
        ctx.teacher = auto.from_config(config)
        return
    path = demo_model_path() if spec.source == "demo-minilm" else spec.source
    ctx.teacher = auto.from_pretrained(path, num_labels=ctx.num_labels)
    ctx.teacher_dir = path


def load_processor(ctx: Context) -> None:
    """The teacher's tokenizer (text) or image processor (vision; none for a model built from a config)."""
    spec = ctx.recipe.teacher
    if spec.source == "config":
        return
    path = demo_model_path() if spec.source == "demo-minilm" else spec.source
    if ctx.recipe.data.task == "text-classification":
        ctx.processor = AutoTokenizer.from_pretrained(path)
    else:
        ctx.processor = AutoImageProcessor.from_pretrained(path)


# ---- stages --------------------------------------------------------------------------------------------------


def _train(trainer: Trainer, work_dir: Path) -> None:
    """Train, resuming from the last checkpoint of an interrupted earlier run of this stage."""
    last = get_last_checkpoint(str(work_dir)) if work_dir.is_dir() else None
    if last:
        logger.info("resuming %s from %s", work_dir.name, last)
    trainer.train(resume_from_checkpoint=last)


def run_stage(ctx: Context, stage: Stage, work_dir: Path):
    """Run one stage; returns the model it produces."""
    args = stage.config(str(work_dir))
    data = ctx.data
    common = dict(train_dataset=data["train"], eval_dataset=data.get("validation"), data_collator=ctx.collator,
                  processing_class=ctx.processor)  # fmt: skip
    if stage.method == "finetune":
        trainer = Trainer(model=ctx.teacher, args=args, **common)
        _train(trainer, work_dir)
        return trainer.model
    if stage.method == "distill":
        layers = stage.extras.get("student_layers")
        student = make_student(ctx.teacher, layers) if layers else copy.deepcopy(ctx.current)
        trainer = DistillationTrainer(model=student, teacher_model=ctx.teacher, args=args, **common)
        _train(trainer, work_dir)
        return trainer.model
    if stage.method in ("homodistil", "prune"):
        start = ctx.current if ctx.current is not ctx.teacher else None
        trainer = HomoDistilTrainer(model=copy.deepcopy(start) if start is not None else None,
                                    teacher_model=ctx.teacher, args=args, **common)  # fmt: skip
        _train(trainer, work_dir)
        return trainer.sliced_model()
    if stage.method == "quantize":
        samples = stage.extras.get("calibration_samples", 256)
        calibration = data["train"].select(range(min(samples, len(data["train"]))))
        model = copy.deepcopy(ctx.current)
        return quantize(model, args, calibration if args.needs_calibration else None, collate_fn=ctx.collator)
    raise ValueError(f"run_stage cannot run method {stage.method!r}")


def _fingerprint(recipe: Recipe, index: int) -> str:
    """Changes when anything this stage depends on changes (data, teacher, it and the stages before it)."""
    resolved = recipe.resolved()
    payload = {"teacher": resolved["teacher"], "data": resolved["data"], "seed": resolved["seed"],
               "stages": resolved["stages"][: index + 1]}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_stage_output(path: Path, task: str):
    auto = AutoModelForSequenceClassification if task == "text-classification" else AutoModelForImageClassification
    try:
        return auto.from_pretrained(str(path))
    except Exception as err:
        raise RuntimeError(
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
        metric: evaluation.task_metric(model, test, metric, ctx.collator),
        "params_m": evaluation.count_params(model) / 1e6,
        "size_mb": evaluation.weights_size_mb(model),
        "latency_8x128": latency["model"]["8x128"],
        "latency_1x128": latency["model"]["1x128"],
        "latency_control_8x128": latency[evaluation.CONTROL]["8x128"],  # the teacher vs itself: must be ~1.00
        "latency_control_1x128": latency[evaluation.CONTROL]["1x128"],
    }


def save_atomically(model, processor, target: Path, extra_files: dict[str, str]) -> None:
    """Write into a temporary sibling folder and rename it into place: a crash never leaves a half-written
    folder that from_pretrained would load."""
    tmp = target.parent / f".tmp-{target.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if processor is not None:
        processor.save_pretrained(tmp)
    for name, text in extra_files.items():
        (tmp / name).write_text(text)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def run_recipe(recipe: Recipe, output_dir: str | Path, force: bool = False) -> list[dict]:
    """Run every stage of ``recipe`` under ``output_dir``; returns the per-stage measurements."""
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".hf_compress_write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"Output folder {output_dir} is not writable ({err.strerror or err}); choose another --output-dir."
        ) from err
    set_seed(recipe.seed)
    ctx = Context(recipe=recipe, output_dir=output_dir)
    load_processor(ctx)
    prepare_data(ctx)
    load_teacher(ctx)
    ctx.current = ctx.teacher
    demo = recipe.teacher.source == "demo-minilm"
    base_model = "sentence-transformers/all-MiniLM-L6-v2" if demo else recipe.teacher.source
    (output_dir / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe.resolved(), sort_keys=False))
    baseline = None
    for index, stage in enumerate(recipe.stages):
        folder = output_dir / f"{index:02d}-{stage.name}"
        if stage.method == "evaluate":
            continue
        fingerprint = _fingerprint(recipe, index)
        done = folder / DONE_NAME
        if not force and done.is_file() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
            print(f"[hf-compress] stage {index} {stage.name}: finished earlier, skipped (--force redoes it)")
            model = _load_stage_output(folder, recipe.data.task)
            record = json.loads(done.read_text())["measurements"]
            if stage.method == "finetune":
                ctx.teacher, baseline = model, None
        else:
            print(f"[hf-compress] stage {index} {stage.name} ({stage.method})", flush=True)
            work = output_dir / f".work-{index:02d}-{stage.name}"
            model = run_stage(ctx, stage, work)
            if stage.method == "finetune":  # the fine-tuned model is the teacher of every later stage
                ctx.teacher, baseline = model, None
            baseline = baseline or measure(ctx, ctx.teacher, "teacher")
            record = measure(ctx, model, stage.name)
            card = write_model_card(recipe, stage, record, baseline, base_model)
            marker = json.dumps({"fingerprint": fingerprint, "measurements": record}, indent=2)
            resolved = yaml.safe_dump(recipe.resolved(), sort_keys=False)
            save_atomically(model, ctx.processor, folder,
                            {"README.md": card, DONE_NAME: marker, "recipe.resolved.yaml": resolved})  # fmt: skip
            shutil.rmtree(work, ignore_errors=True)
        ctx.current = model
        ctx.results.append({**record, "method": stage.method, "folder": str(folder)})
    write_summary(ctx, baseline or measure(ctx, ctx.teacher, "teacher"))
    return ctx.results


def write_summary(ctx: Context, baseline: dict) -> None:
    metric = ctx.recipe.data.metric
    rows = [{**baseline, "stage": "teacher", "method": "-"}] + ctx.results
    lines = [f"# {ctx.recipe.name}: summary", "",
             f"| stage | method | {metric} | % of teacher | params (M) | MB | speed-up 8x128 | speed-up 1x128 |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    teacher_score = baseline[metric] or 1.0
    for row in rows:
        lines.append(
            f"| {row['stage']} | {row['method']} | {row[metric]:.4f} | {100 * row[metric] / teacher_score:.1f} | "
            f"{row['params_m']:.2f} | {row['size_mb']:.1f} | "
            f"{evaluation.format_speedup(row['latency_8x128'], row.get('latency_control_8x128'))} | "
            f"{evaluation.format_speedup(row['latency_1x128'], row.get('latency_control_1x128'))} |"
        )
    lines += ["", evaluation.control_summary(rows)]
    text = "\n".join(lines) + "\n"
    (ctx.output_dir / "summary.md").write_text(text)
    (ctx.output_dir / "summary.json").write_text(json.dumps({"teacher": baseline, "stages": ctx.results}, indent=2))
    print(text)
