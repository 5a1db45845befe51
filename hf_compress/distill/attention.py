"""An attention implementation that returns the attention distribution before dropout.

transformers' eager attention returns the probabilities *after* attention dropout, so in training mode the
maps are rescaled and partly zeroed and no longer sum to 1: a KL or MSE against the teacher's maps would
compare noise. This function computes the same output as eager attention (dropout included) but returns
the clean softmax probabilities. It is registered with transformers' `AttentionInterface` under
``ATTN_IMPLEMENTATION`` and only switched on when attention KD is. ``ATTN_SCORES_IMPLEMENTATION`` computes the
same output but returns the pre-softmax scores ``q k^T * scaling`` (before the padding mask is added), for
TinyBERT's attention loss (``attention_loss_type="mse_scores"``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

ATTN_IMPLEMENTATION = "hf_compress_kd"
ATTN_SCORES_IMPLEMENTATION = "hf_compress_kd_scores"
_CALLS = [0]


def call_count() -> int:
    """How many times our KD attention (`kd_attention_forward` / `kd_attention_scores_forward`) has run:
    attention KD checks that the models really use it (a model whose attention bypasses transformers'
    AttentionInterface would silently return eager, post-dropout maps)."""
    return _CALLS[0]


def _attend(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None,
    dropout: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Eager attention: the output (B, L, H, d), the pre-softmax scores ``q k^T * scaling`` before the padding
    mask (B, H, L, L) and the softmax probabilities before dropout (B, H, L, L)."""
    _CALLS[0] += 1
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    masked = scores if attention_mask is None else scores + attention_mask
    probs = nn.functional.softmax(masked, dim=-1, dtype=torch.float32).to(query.dtype)
    dropped = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(dropped, value).transpose(1, 2).contiguous()
    return output, scores, probs


def kd_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[Tensor, Tensor]:
    """query/key/value: (B, H, L, d); attention_mask: additive (B, 1, L, L) or None.

    Returns the attention output (B, L, H, d) and the pre-dropout probabilities (B, H, L, L).
    """
    output, _, probs = _attend(module, query, key, value, attention_mask, scaling, dropout)
    return output, probs


def kd_attention_scores_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[Tensor, Tensor]:
    """As `kd_attention_forward`, but returns the pre-softmax scores (B, H, L, L), unmasked, in place of the
    probabilities (padded keys are excluded by the loss's mask)."""
    output, scores, _ = _attend(module, query, key, value, attention_mask, scaling, dropout)
    return output, scores


AttentionInterface.register(ATTN_IMPLEMENTATION, kd_attention_forward)
AttentionInterface.register(ATTN_SCORES_IMPLEMENTATION, kd_attention_scores_forward)
# transformers builds the attention mask per implementation; without this registration a custom implementation
# receives attention_mask=None and attends to padding. Ours take eager's additive float mask.
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)
AttentionMaskInterface.register(ATTN_SCORES_IMPLEMENTATION, eager_mask)
