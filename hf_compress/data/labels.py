"""The label and text columns of a recipe's data, checked and turned into class ids 0..K-1 as run_glue does.

String labels ("pos" / "neg") become ids in sorted order of the names seen in the train split, and the names
go to the model config (``id2label`` / ``label2id``). Integer labels must run 0..K-1; float labels are only
for regression (``teacher.num_labels: 1``). Each problem is one sentence naming the field and the fix.
"""

from __future__ import annotations

import logging
import math

from datasets import ClassLabel, Dataset

from ..models.labels import match_by_name, named_labels
from ..validation import RecipeError

logger = logging.getLogger(__name__)


def resolve_labels(
    splits: dict[str, Dataset], column: str, num_labels: int | None
) -> tuple[dict[str, Dataset], int, dict[int, str] | None]:
    """``(splits with integer labels, number of labels, id2label or None)``."""
    train = splits["train"]
    feature = train.features[column]
    where = f"data.label_column {column!r}"
    if isinstance(feature, ClassLabel):
        k = feature.num_classes
        _check_count(where, num_labels, k)
        return splits, num_labels or k, dict(enumerate(feature.names))
    dtype = getattr(feature, "dtype", "")
    values = {key: ds[column] for key, ds in splits.items()}
    if any(v is None for vals in values.values() for v in vals):
        raise RecipeError(f"{where} has empty values; every row needs a label.")
    if num_labels == 1:  # regression
        if dtype not in ("float32", "float64", "int32", "int64", "float16"):
            raise RecipeError(f"{where} holds {dtype} values but teacher.num_labels: 1 is regression; use numbers.")
        for key, vals in values.items():
            bad = next((i for i, v in enumerate(vals) if not math.isfinite(float(v))), None)
            if bad is not None:
                raise RecipeError(
                    f"{where}: row {bad} of the {key} split has the regression label {vals[bad]}; every label must "
                    "be a finite number (fix or drop the row)."
                )
        return splits, 1, None
    if dtype in ("string", "large_string"):
        names = sorted(set(values["train"]))
        label2id = {name: i for i, name in enumerate(names)}
        for key, vals in values.items():
            unknown = sorted(set(vals) - set(label2id))
            if unknown:
                raise RecipeError(
                    f"{where}: the {key} split has label(s) {unknown[:5]} that the train split does not have "
                    f"({names[:10]}); fix the labels or the split."
                )
        _check_count(where, num_labels, len(names))
        mapped = {
            key: ds.map(lambda b: {column: [label2id[v] for v in b[column]]}, batched=True).cast_column(
                column, ClassLabel(names=names)
            )
            for key, ds in splits.items()
        }
        return mapped, len(names), dict(enumerate(names))
    if dtype.startswith("float"):
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and float(v).is_integer()
                   for vals in values.values() for v in vals):  # fmt: skip
            raise RecipeError(
                f"{where} holds non-integer float values but the task is classification; use class ids 0..K-1 "
                "or names, or set teacher.num_labels: 1 for regression."
            )
        splits = {k: ds.map(lambda b: {column: [int(v) for v in b[column]]}, batched=True) for k, ds in splits.items()}
        values = {key: [int(v) for v in vals] for key, vals in values.items()}
    elif not dtype.startswith(("int", "uint", "bool")):
        raise RecipeError(f"{where} holds {dtype or type(feature).__name__} values; use class ids 0..K-1 or names.")
    seen = {int(v) for vals in values.values() for v in vals}
    low, high = min(seen), max(seen)
    if low < 0 or (low >= 1 and 0 not in seen):
        raise RecipeError(
            f"{where}: labels run {low}..{high} but class ids must run 0..K-1; renumber them (e.g. subtract "
            f"{low}) or use label names."
        )
    k = high + 1
    _check_count(where, num_labels, k)
    return splits, num_labels or k, None


def _check_count(where: str, num_labels: int | None, k: int) -> None:
    if k < 2:
        raise RecipeError(f"{where}: the data has only {k} class; classification needs at least 2.")
    if num_labels is not None and num_labels != k:
        raise RecipeError(
            f"teacher.num_labels={num_labels} but {where} has {k} classes; set teacher.num_labels: {k} "
            "(or remove it to use the data's)."
        )


def align_with_teacher_head(
    splits: dict[str, Dataset], column: str, data_labels: dict[int, str] | None, head_labels: dict | None, order: str
) -> tuple[dict[str, Dataset], dict[int, str] | None]:
    """Make the data's class ids mean what the teacher's classification head means.

    A fine-tuned head knows its classes by name (``config.id2label``). When the data's classes have names too
    (string labels or a ``ClassLabel``), the names decide: the same names in another order renumber the data to
    the head's order; other names are an error, since index order would silently swap classes. With
    ``order="index"`` (``teacher.label_order: index``) or generic names on either side, ids are kept as they are.
    Returns the splits and the id2label the models should carry."""
    head = named_labels(head_labels)
    if order == "index" or head is None or data_labels is None or named_labels(data_labels) is None:
        return splits, head or data_labels
    remap = match_by_name(data_labels, head)
    if remap is None:
        raise RecipeError(
            f"The teacher's classification head has classes {head} but the data's labels are {data_labels}: "
            "matching them by index would silently swap classes. Rename the data's labels to the head's names, "
            "or set teacher.label_order: index if the data's class i really is the head's class i."
        )
    if all(i == j for i, j in remap.items()):
        return splits, head
    logger.info("renumbering the data's classes to the teacher head's order: %s", remap)
    mapped = {}
    for key, ds in splits.items():
        ds = ds.map(lambda b: {column: [remap[int(v)] for v in b[column]]}, batched=True)
        if isinstance(ds.features[column], ClassLabel):
            ds = ds.cast_column(column, ClassLabel(names=[head[i] for i in range(len(head))]))
        mapped[key] = ds
    return mapped, head


def check_text_column(splits: dict[str, Dataset], column: str, field: str) -> None:
    """Every row of a text column holds a string: an empty CSV cell (None) or a number would stop the tokenizer
    with an error that names neither the row nor the column."""
    for key, ds in splits.items():
        values = ds[column]
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            what = "is empty" if values[bad] is None else f"holds {type(values[bad]).__name__} {values[bad]!r}"
            raise RecipeError(
                f"data.{field} {column!r}: row {bad} of the {key} split {what}; every row needs text (fill or drop "
                "the row, or point the field at the text column)."
            )
