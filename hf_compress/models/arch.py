"""What differs per architecture: where the encoder layers live and which modality a model is.

Distillation itself only needs the generic outputs every encoder returns (logits, ``hidden_states``,
``attentions``); the helpers here answer the few structural questions that the generic outputs do not, from the
model's `families.Family` entry.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from .families import Modality, family_of


def modality_of(model: PreTrainedModel) -> Modality:
    """``"vision"`` for models fed ``pixel_values`` (ViT, DeiT, ...), ``"text"`` for token models."""
    return family_of(model).modality


def find_layer_list(model: PreTrainedModel) -> tuple[str, nn.ModuleList]:
    """Return ``(qualified_name, module_list)`` of the encoder's transformer layers (e.g. ``bert.encoder.layer``)."""
    family = family_of(model)
    layers = model.base_model.get_submodule(family.layers)
    name = next(n for n, m in model.named_modules() if m is layers)
    return name, layers
