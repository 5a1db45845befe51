"""Teacher-labelled transfer sets: the teacher's logits stored as a dataset column, computed once.

`DistillationTrainer` reads that column instead of running the teacher (prediction KD), which makes many epochs
over a large augmented transfer set affordable: for an RNN student the teacher forward is most of a step.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedModel

# The column of teacher logits `label_with_teacher` stores; `DistillationTrainer` uses it instead of a teacher forward.
TEACHER_LOGITS = "teacher_logits"


_PAD_VALUES = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0}


def pad_batch(rows: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad the token columns of ``rows`` to the longest row: {column: (B, L) long tensor}."""
    width = max(len(row["input_ids"]) for row in rows)
    batch = {}
    for column, value in _PAD_VALUES.items():
        if column not in rows[0]:
            continue
        value = pad_token_id if value is None else value
        batch[column] = torch.tensor([list(row[column]) + [value] * (width - len(row[column])) for row in rows])
    if "attention_mask" not in batch:
        lengths = torch.tensor([len(row["input_ids"]) for row in rows])
        batch["attention_mask"] = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return batch


@torch.no_grad()
def label_with_teacher(
    teacher: PreTrainedModel, dataset: Dataset, batch_size: int = 64, column: str = TEACHER_LOGITS
) -> Dataset:
    """``dataset`` plus a ``column`` of the teacher's logits (float32, one list of C values per row).

    dataset: tokenized rows (``input_ids`` and optionally ``attention_mask`` / ``token_type_ids``, unpadded or
    padded). Rows are batched by length (little padding), run once in eval mode under ``no_grad``, and stored in
    the original order. The result is an ordinary `datasets.Dataset`: ``save_to_disk`` / ``load_from_disk`` work.
    """
    if "input_ids" not in dataset.column_names:
        raise ValueError(
            f"label_with_teacher needs a tokenized dataset with input_ids; it has {dataset.column_names}. "
            "Tokenize it with the teacher's tokenizer first (dataset.map(tokenizer, batched=True))."
        )
    if column in dataset.column_names:
        raise ValueError(f"The dataset already has a {column!r} column; remove it first to relabel.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    pad = teacher.config.pad_token_id if teacher.config.pad_token_id is not None else 0
    columns = [c for c in _PAD_VALUES if c in dataset.column_names]
    rows = dataset.select_columns(columns)
    lengths = np.array([len(ids) for ids in rows["input_ids"]])
    order = np.argsort(lengths, kind="stable")
    logits: list = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size].tolist()
        batch = pad_batch([rows[i] for i in indices], pad)
        out = teacher(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
        if out.dim() != 2:
            raise ValueError(
                f"label_with_teacher stores one logit vector per row (sequence classification); this teacher returns "
                f"logits of shape {tuple(out.shape)}. Distil token-level heads with a live teacher_model instead."
            )
        for i, row in zip(indices, out.tolist()):
            logits[i] = row
    teacher.train(was_training)
    return dataset.add_column(column, logits)
