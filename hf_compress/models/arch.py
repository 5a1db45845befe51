"""What differs per architecture: where the encoder layers live and which modality a model is.

Distillation itself only needs the generic outputs every encoder returns (logits, ``hidden_states``,
``attentions``); the helpers here answer the few structural questions that the generic outputs do not, from the
model's `families.Family` entry.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from .families import Modality, family_of, find_family


def config_modality(config) -> Modality | None:
    """``"vision"`` for a config of a model fed ``pixel_values`` (a ViT's ``image_size`` and ``num_channels``, or a
    convnet's ``num_channels`` without a vocabulary), ``"text"`` for one with a vocabulary, None otherwise."""
    channels = getattr(config, "num_channels", None) is not None
    if channels and (getattr(config, "image_size", None) is not None or getattr(config, "vocab_size", None) is None):
        return "vision"
    if getattr(config, "vocab_size", None) is not None:
        return "text"
    return None


def modality_of(model: PreTrainedModel) -> Modality:
    """``"vision"`` for models fed ``pixel_values`` (ViT, DeiT, a ResNet / ConvNeXt teacher), ``"text"`` for token
    models.

    From the family table; for a model type it does not know, from its input name and config (prediction KD and
    quantization need nothing else)."""
    family = find_family(model)
    if family is not None:
        return family.modality
    if getattr(model, "main_input_name", None) == "pixel_values":
        return "vision"
    modality = config_modality(model.config)
    if modality is None:
        raise ValueError(
            f"{type(model).__name__} is neither a text model (config.vocab_size) nor a vision model "
            "(config.num_channels); hf_compress supports encoder families (see README, Supported models)."
        )
    return modality


def is_transformer(config) -> bool:
    """Does the model have transformer layers (``num_hidden_layers``), whose hidden states and attention maps can
    be matched layer by layer? A convnet (ResNet, ConvNeXt: stages of feature maps) has none."""
    return getattr(config, "num_hidden_layers", None) is not None


def find_layer_list(model: PreTrainedModel) -> tuple[str, nn.ModuleList]:
    """Return ``(qualified_name, module_list)`` of the encoder's transformer layers (e.g. ``bert.encoder.layer``)."""
    family = family_of(model)
    layers = model.base_model.get_submodule(family.layers)
    name = next(n for n, m in model.named_modules() if m is layers)
    return name, layers
