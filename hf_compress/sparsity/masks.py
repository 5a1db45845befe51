"""Unstructured and N:M (2:4) semi-structured weight masks of the encoder's Linear layers, by magnitude.

These zero individual weights. The model keeps its shape, so dense CPU inference is exactly as slow as before
and the checkpoint is exactly as large (zeros are stored). 2:4 sparsity is only faster on GPUs with sparse tensor
cores (NVIDIA Ampere and newer) through dedicated kernels (``torch.sparse.to_sparse_semi_structured``);
unstructured sparsity needs a sparse runtime. For a smaller, faster model that loads anywhere use structured
pruning (`HomoDistilTrainer`), which removes whole heads, neurons and channels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, TrainerCallback

from ..distill.config import check_choice
from ..models.arch import find_layer_list
from .config import SparsityPattern


def encoder_linears(model: PreTrainedModel) -> dict[str, nn.Linear]:
    """Every Linear inside the encoder's layers, by its full module name."""
    try:
        prefix, layers = find_layer_list(model)
    except (ValueError, AttributeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{type(model).__name__} has no transformer layers to sparsify ({err}); sparsity applies to the Linear "
            "layers of a BERT / ViT-family encoder."
        ) from err
    return {f"{prefix}.{name}": m for name, m in layers.named_modules() if isinstance(m, nn.Linear)}


@torch.no_grad()
def magnitude_masks(
    model: PreTrainedModel, sparsity: float = 0.5, pattern: SparsityPattern = "unstructured"
) -> dict[str, Tensor]:
    """Boolean keep-masks for the weights of every Linear in the encoder layers, by |w|.

    ``unstructured``: the smallest ``sparsity`` fraction of each layer's weights is dropped.
    ``2:4``: in every group of 4 consecutive input weights of an output row the 2 smallest are dropped
    (``sparsity`` must be 0.5).
    """
    check_choice("pattern", pattern, SparsityPattern)
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}.")
    masks = {}
    for name, linear in encoder_linears(model).items():
        weight = linear.weight.abs()
        if pattern == "2:4":
            if sparsity != 0.5:
                raise ValueError("2:4 semi-structured sparsity is always 0.5; pass sparsity=0.5.")
            if weight.shape[1] % 4:
                raise ValueError(
                    f"{name} has {weight.shape[1]} input features, not a multiple of 4, so 2:4 cannot apply."
                )
            groups = weight.view(weight.shape[0], -1, 4)
            keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.topk(2, dim=-1).indices, True)
            masks[name] = keep.view_as(weight)
        else:
            drop = int(round(sparsity * weight.numel()))
            keep = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
            if drop:
                keep[weight.flatten().topk(drop, largest=False).indices] = False
            masks[name] = keep.view_as(weight)
    return masks


@torch.no_grad()
def measured_sparsity(model: PreTrainedModel) -> float:
    """The fraction of exact zeros among the weights of the encoder's Linear layers."""
    linears = encoder_linears(model).values()
    total = sum(m.weight.numel() for m in linears)
    return sum(int((m.weight == 0).sum()) for m in linears) / max(total, 1)


@torch.no_grad()
def apply_weight_masks(model: PreTrainedModel, masks: dict[str, Tensor]) -> None:
    """Zero the masked weights in place."""
    modules = dict(model.named_modules())
    for name, keep in masks.items():
        modules[name].weight.mul_(keep.to(modules[name].weight))


class WeightMaskCallback(TrainerCallback):
    """Re-apply the masks after every optimizer step, so fine-tuning / distillation keeps the zeros."""

    def __init__(self, model: PreTrainedModel, masks: dict[str, Tensor]) -> None:
        self.model, self.masks = model, masks

    def on_train_begin(self, args, state, control, **kwargs):
        apply_weight_masks(self.model, self.masks)

    def on_step_end(self, args, state, control, **kwargs):
        apply_weight_masks(self.model, self.masks)
