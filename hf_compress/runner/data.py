"""A recipe's data: loaded (demo sets, local files, a dataset folder or a Hub id), split, limited, checked, labelled
as the teacher's head expects, and encoded by the teacher's processor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import DatasetDict, load_dataset
from transformers import DataCollatorWithPadding

from ..data import load_fashion_mnist, load_rotten_tomatoes
from ..data.labels import align_with_teacher_head, check_text_column, resolve_labels
from ..validation import RecipeError
from .context import HEADS, Context


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
    if saved is not None and any(a.endswith(HEADS) for a in saved.architectures or []) and ctx.num_labels > 1:
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
