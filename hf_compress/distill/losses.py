"""Distillation losses as pure functions.

Every function takes student and teacher tensors of the same shape, an optional boolean ``mask`` that
says which positions count, and returns a scalar. Each loss is zero when the student equals the teacher
and is computed in float32 whatever the input dtype (bf16 training stays numerically sane).

Shapes: ``B`` batch, ``L`` sequence length (tokens or patches + CLS), ``C`` classes / vocabulary,
``D`` hidden width, ``H`` attention heads.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

HiddenLossType = Literal["mse", "cosine"]
AttentionLossType = Literal["kl", "mse", "mse_scores"]

_EPS = 1e-12


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` over the positions where ``mask`` is true.

    values: (B, L) or (N,); mask: same shape, bool (or 0/1), or None for "all positions count".
    An all-false mask gives 0 (nothing to learn from), not NaN.
    """
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def soft_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None = None
) -> Tensor:
    """Hinton KD: ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over positions.

    student_logits, teacher_logits: (B, C) for sequence / image classification, (B, L, C) for token
    classification and masked LM; mask: None or (B,) / (B, L) bool, the positions that count (real
    tokens, or masked-LM positions).
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (t.exp() * (t - s)).sum(dim=-1)  # (B,) or (B, L)
    return masked_mean(kl, mask) * temperature**2


def hard_kd_loss(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """DeiT-style hard distillation: cross-entropy against the teacher's argmax.

    student_logits, teacher_logits: (B, C) or (B, L, C); mask: None or (B,) / (B, L) bool.
    """
    targets = teacher_logits.argmax(dim=-1)
    ce = F.cross_entropy(student_logits.float().flatten(0, -2), targets.flatten(), reduction="none")
    return masked_mean(ce.view(targets.shape), mask)


def regression_kd_loss(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """MSE between student and teacher predictions, for regression heads (num_labels == 1).

    student_logits, teacher_logits: (B, 1) or (B, L, 1); mask: None or (B,) / (B, L) bool.
    """
    se = (student_logits.float() - teacher_logits.float()).pow(2).mean(dim=-1)
    return masked_mean(se, mask)


def logit_mse_loss(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Tang et al. (2019): mean squared error between the raw logits (no temperature, no softmax).

    student_logits, teacher_logits: (B, C) or (B, L, C); mask: None or (B,) / (B, L) bool. Averaged over
    classes, then over the positions that count. Unlike the KL it also matches the logits' scale.
    """
    se = (student_logits.float() - teacher_logits.float()).pow(2).mean(dim=-1)
    return masked_mean(se, mask)


def hidden_state_loss(
    student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None = None, loss_type: HiddenLossType = "mse"
) -> Tensor:
    """Layer-wise hidden-state (or embedding) loss over real positions.

    student_hidden, teacher_hidden: (B, L, D), the student already projected to the teacher's width;
    mask: None or (B, L) bool, true for real (non-padding) tokens.
    ``mse``: mean squared error per element; ``cosine``: ``1 - cos`` between the two D-vectors per position.
    """
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(
            f"hidden_state_loss got student {tuple(student_hidden.shape)} and teacher "
            f"{tuple(teacher_hidden.shape)}; project the student to the teacher's width first."
        )
    s, t = student_hidden.float(), teacher_hidden.float()
    if loss_type == "mse":
        per_position = (s - t).pow(2).mean(dim=-1)
    elif loss_type == "cosine":
        per_position = 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)
    else:
        raise ValueError(f"Unknown hidden loss type {loss_type!r}; expected 'mse' or 'cosine'.")
    return masked_mean(per_position, mask)


def attention_loss(
    student_attention: Tensor,
    teacher_attention: Tensor,
    mask: Tensor | None = None,
    loss_type: AttentionLossType = "kl",
) -> Tensor:
    """Loss between attention maps.

    student_attention, teacher_attention: (B, H, L, L): post-softmax probabilities (each query row sums to 1)
    for ``kl`` and ``mse``, pre-softmax scores ``q k^T / sqrt(d)`` (before the padding mask is added) for
    ``mse_scores``; mask: None or (B, L) bool, true for real tokens. Padded query rows never count; with ``mse``
    and ``mse_scores`` padded key columns are excluded too (with ``kl`` they carry zero probability already).
    ``kl``: ``KL(teacher_row || student_row)`` averaged over heads and real query rows;
    ``mse``: mean squared error over real (query, key) pairs;
    ``mse_scores``: TinyBERT's attention loss, the same MSE on the pre-softmax scores.
    """
    if student_attention.shape != teacher_attention.shape:
        raise ValueError(
            f"attention_loss got student {tuple(student_attention.shape)} and teacher "
            f"{tuple(teacher_attention.shape)}: head counts or sequence lengths differ. Use "
            "attention_head_mode='mean' to compare head-averaged maps when the head counts differ."
        )
    s, t = student_attention.float(), teacher_attention.float()
    num_heads = s.shape[1]
    if loss_type == "kl":
        per_row = (torch.special.xlogy(t, t) - t * s.clamp_min(_EPS).log()).sum(dim=-1)  # (B, H, L)
        row_mask = None if mask is None else mask[:, None, :].expand(-1, num_heads, -1)
        return masked_mean(per_row, row_mask)
    if loss_type in ("mse", "mse_scores"):
        se = (s - t).pow(2)  # (B, H, L, L)
        if mask is None:
            return se.mean()
        pair_mask = (mask[:, None, :, None] & mask[:, None, None, :]).expand_as(se)
        return masked_mean(se, pair_mask)
    raise ValueError(f"Unknown attention loss type {loss_type!r}; expected 'kl', 'mse' or 'mse_scores'.")


def average_heads(attention: Tensor) -> Tensor:
    """(B, H, L, L) -> (B, 1, L, L): the head-averaged attention map, still a distribution per query row."""
    return attention.mean(dim=1, keepdim=True)


def pool_tokens(hidden: Tensor, mask: Tensor | None, mode: Literal["mean", "cls"] = "mean") -> Tensor:
    """(B, L, D) hidden states -> (B, D): the mean over real tokens (``mask`` (B, L)) or the first token, as
    sentence-transformers' Pooling does (a row without real tokens pools to zeros)."""
    hidden = hidden.float()
    if mode == "cls":
        return hidden[:, 0]
    weights = torch.ones(hidden.shape[:2], device=hidden.device) if mask is None else mask.float()
    return (hidden * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp_min(1.0)


def pooled(hidden: Tensor, mask: Tensor | None, mode: Literal["mean", "cls"] = "mean") -> Tensor:
    """A sentence embedding: `pool_tokens`, L2-normalised (as sentence-transformers' Pooling + Normalize)."""
    return F.normalize(pool_tokens(hidden, mask, mode), dim=-1, eps=_EPS)


def pooled_embedding_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """KD on normalised sentence embeddings, student (B, Ds) and teacher (B, Dt). Same width: the mean of
    ``1 - cos(student_i, teacher_i)``. Other widths: the mean squared difference of the batch's cosine-similarity
    matrices (B, B), which needs no projection between the spaces (relational KD)."""
    student, teacher = student.float(), teacher.float()
    if student.shape[-1] == teacher.shape[-1]:
        return (1 - (student * teacher).sum(-1)).mean()
    rows = student.shape[0]
    if rows < 2:
        raise ValueError("pooled_weight at another width than the teacher's compares similarities within a batch: "
                         "it needs at least 2 rows per device batch (per_device_train_batch_size >= 2).")  # fmt: skip
    off_diagonal = ~torch.eye(rows, dtype=torch.bool, device=student.device)  # (self-similarity is always 1)
    return (student @ student.T - teacher @ teacher.T)[off_diagonal].pow(2).mean()
