"""Gradient accumulation for token-level loss terms: weigh each micro-batch as in one large batch.

A token-level term (hidden / attention / embedding KD; prediction KD and the label loss of masked-LM and
token-classification heads) is a mean over the positions of one micro-batch. Micro-batches with different numbers
of real tokens would then weigh the same, and 2 x 4 accumulated would not equal 1 x 8. These pure functions turn
each micro-batch mean into ``micro-batch sum / positions counted over the whole accumulated batch``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch


def positions(inputs: Mapping[str, Any]) -> dict[str, int]:
    """How many positions each kind of token-level term averages over in one micro-batch: ``tokens`` (real
    tokens), ``pairs`` (query-key pairs of attention maps), ``labelled`` (positions with a label != -100, or every
    token when the labels are per sequence). Empty for images: every micro-batch has the same patch count."""
    ids = inputs.get("input_ids")
    attention_mask = inputs.get("attention_mask")
    if attention_mask is not None:
        lengths = attention_mask.long().sum(-1)
    elif ids is not None:
        lengths = torch.full((ids.shape[0],), ids.shape[-1])
    else:
        return {}
    labels = inputs.get("labels")
    labelled = int(labels.ne(-100).sum()) if labels is not None and labels.dim() == 2 else int(lengths.sum())
    return {"tokens": int(lengths.sum()), "pairs": int(lengths.pow(2).sum()), "labelled": labelled}


def accumulated_positions(batches: Iterable[Mapping[str, Any]]) -> dict[str, int] | None:
    """`positions` summed over the micro-batches of one optimizer step, plus their number (None for images)."""
    totals: dict[str, int] = {}
    count = 0
    for batch in batches:
        count += 1
        for kind, value in positions(batch).items():
            totals[kind] = totals.get(kind, 0) + value
    return {**totals, "micro_batches": count} if totals else None


def accumulation_scales(
    inputs: Mapping[str, Any], totals: Mapping[str, int] | None, attention_kind: str, token_level: bool
) -> dict[str, float]:
    """Per loss term, the factor turning this micro-batch's mean into ``micro-batch sum / accumulated count``,
    times the number of micro-batches (the Trainer divides the summed loss by it). Empty without accumulation.

    ``attention_kind`` is the position kind the attention loss averages over (``"tokens"`` or ``"pairs"``);
    ``token_level`` says the prediction KD and label terms are per token too."""
    if not totals or totals["micro_batches"] < 2:
        return {}
    local = positions(inputs)
    if not local:
        return {}

    def scale(kind: str) -> float:
        return local[kind] * totals["micro_batches"] / max(totals[kind], 1)

    tokens = scale("tokens")
    scales = {"hidden_loss": tokens, "embedding_loss": tokens, "attention_loss": scale(attention_kind)}
    if token_level:
        scales["kd_loss"] = scales["hard_label_loss"] = scale("labelled")
    return scales
