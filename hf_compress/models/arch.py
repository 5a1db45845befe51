"""What differs per architecture: where the encoder layers live and which modality a model is.

Distillation itself only needs the generic outputs every BERT/ViT-family model returns (logits,
``hidden_states``, ``attentions``); the helpers here answer the few structural questions that the
generic outputs do not.
"""

from __future__ import annotations

from typing import Literal

from torch import nn
from transformers import PreTrainedModel

Modality = Literal["text", "vision"]


def modality_of(model: PreTrainedModel) -> Modality:
    """``"vision"`` for models fed ``pixel_values`` (ViT, DeiT, ...), ``"text"`` for token models."""
    config = model.config
    if getattr(config, "image_size", None) is not None and getattr(config, "num_channels", None) is not None:
        return "vision"
    if getattr(config, "vocab_size", None) is not None:
        return "text"
    raise ValueError(
        f"{type(model).__name__} is neither a text model (config.vocab_size) nor a vision model "
        "(config.image_size / num_channels); hf_compress supports BERT- and ViT-family encoders."
    )


def find_layer_list(model: PreTrainedModel) -> tuple[str, nn.ModuleList]:
    """Return ``(qualified_name, module_list)`` of the encoder's transformer layers.

    BERT keeps them in ``bert.encoder.layer``, ViT (transformers 5) in ``vit.layers``; rather than a
    table of names we look for the one ``nn.ModuleList`` whose length is ``config.num_hidden_layers``.
    """
    num_layers = model.config.num_hidden_layers
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == num_layers and name
    ]
    # Prefer the outermost list (a layer may itself hold ModuleLists of the same length).
    candidates.sort(key=lambda item: item[0].count("."))
    if not candidates:
        raise ValueError(
            f"Could not find the list of {num_layers} encoder layers in {type(model).__name__}; "
            "hf_compress supports BERT- and ViT-family encoders."
        )
    return candidates[0]
