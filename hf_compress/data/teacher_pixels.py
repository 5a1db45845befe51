"""Images preprocessed twice, when the teacher and the student expect different inputs (a ResNet-50 at 224 x 224
with ImageNet normalisation teaching a ViT at 384, or a grey-scale student of an RGB teacher): the student's
``pixel_values`` and the teacher's ``teacher_pixel_values``, each from its own image processor.

`DistillationTrainer` feeds ``teacher_pixel_values`` to the teacher as its ``pixel_values`` when the column is there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset

# The column `DistillationTrainer` feeds to the teacher instead of the student's pixel_values.
TEACHER_PIXEL_VALUES = "teacher_pixel_values"


def _rgb(images: list[Any]) -> list[Any]:
    return [img.convert("RGB") if hasattr(img, "convert") else img for img in images]


def add_teacher_pixels(
    dataset: Dataset,
    student_processor,
    teacher_processor,
    image_column: str = "image",
    batch_size: int = 64,
    keep_images: bool = False,
) -> Dataset:
    """``dataset`` with ``pixel_values`` from ``student_processor`` and ``teacher_pixel_values`` from
    ``teacher_processor`` (image processors called as ``processor(images=..., return_tensors="np")``), in torch
    format. The image column is dropped unless ``keep_images``."""
    if image_column not in dataset.column_names:
        raise ValueError(
            f"add_teacher_pixels: the dataset has no column {image_column!r} (it has {dataset.column_names}); pass "
            "image_column= naming the column that holds the images."
        )

    def encode(batch):
        images = _rgb(batch[image_column])
        return {
            "pixel_values": np.asarray(student_processor(images=images, return_tensors="np")["pixel_values"]),
            TEACHER_PIXEL_VALUES: np.asarray(teacher_processor(images=images, return_tensors="np")["pixel_values"]),
        }

    removed = [] if keep_images else [image_column]
    encoded = dataset.map(encode, batched=True, batch_size=batch_size, remove_columns=removed)
    return encoded.with_format("torch")
