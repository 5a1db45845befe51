"""What differs per architecture: where the encoder layers live and which modality a model is.

Distillation itself only needs the generic outputs every encoder returns (logits, ``hidden_states``,
``attentions``); the helpers here answer the few structural questions that the generic outputs do not, from the
model's `families.Family` entry.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from .families import Modality, family_of, find_family


def modality_of(model: PreTrainedModel) -> Modality:
    """``"vision"`` for models fed ``pixel_values`` (ViT, DeiT, ...), ``"text"`` for token models.

    From the family table; for a model type it does not know, from the config (prediction KD and quantization
    need nothing else)."""
    family = find_family(model)
    if family is not None:
        return family.modality
    config = model.config
    if getattr(config, "image_size", None) is not None and getattr(config, "num_channels", None) is not None:
        return "vision"
    if getattr(config, "vocab_size", None) is not None:
        return "text"
    raise ValueError(
        f"{type(model).__name__} is neither a text model (config.vocab_size) nor a vision model "
        "(config.image_size / num_channels); hf_compress supports encoder families (see README, Supported models)."
    )


def find_layer_list(model: PreTrainedModel) -> tuple[str, nn.ModuleList]:
    """Return ``(qualified_name, module_list)`` of the encoder's transformer layers (e.g. ``bert.encoder.layer``)."""
    family = family_of(model)
    layers = model.base_model.get_submodule(family.layers)
    name = next(n for n, m in model.named_modules() if m is layers)
    return name, layers
