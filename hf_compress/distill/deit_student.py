"""DeiT students (Touvron et al. 2021): a ViT with a second, *distillation* token whose own head learns from the
teacher while the class token's head learns from the labels; at inference the two heads' logits are averaged.

The student is transformers' own `DeiTForImageClassificationWithTeacher`, so it saves and reloads with
``from_pretrained`` (``AutoModelForImageClassification`` picks it from ``config.architectures``) and runs in
``pipeline("image-classification")``; its ``logits`` output is already the average of the two heads.
`DistillationTrainer` trains the class head on the labels (``hard_label_weight``) and the distillation head on the
teacher (``kd_weight``; DeiT's best is ``kd_loss_type="hard"``, both weights 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher, PretrainedConfig, PreTrainedModel

from .matching import TEACHER_LAYERS_ATTR, check_kept_layers

DEIT_STUDENT = DeiTForImageClassificationWithTeacher
_SOURCES = ("vit", "deit")
_PREFIX = {"vit": "vit.", "deit": "deit."}


def has_distillation_head(model: PreTrainedModel) -> bool:
    """A student with a class head and a distillation head (DeiT's ``...WithTeacher``)."""
    return hasattr(model, "cls_classifier") and hasattr(model, "distillation_classifier")


def has_distillation_token(model: PreTrainedModel) -> bool:
    """Does the model put a distillation token after its class token (every DeiT does)?"""
    embeddings = getattr(model.base_model, "embeddings", None)
    return getattr(embeddings, "distillation_token", None) is not None


def deit_config(config: PretrainedConfig, num_layers: int | None = None) -> DeiTConfig:
    """A `DeiTConfig` with the geometry, widths and labels of a ViT / DeiT ``config`` (``num_layers`` layers)."""
    if getattr(config, "model_type", None) not in _SOURCES:
        raise ValueError(
            f"A DeiT student is built from a ViT or DeiT config (model_type vit or deit), got {config.model_type!r}: "
            "its layout (patch embedding, class / position tokens, layers) differs. Give make_deit_student a "
            "ViTConfig / DeiTConfig with the shape you want; the teacher may still be any image classifier."
        )
    keys = set(DeiTConfig().to_dict()) - {"model_type", "transformers_version", "architectures"}
    values = {k: v for k, v in config.to_dict().items() if k in keys}
    values.pop("_name_or_path", None)
    if num_layers is not None:
        values["num_hidden_layers"] = num_layers
    deit = DeiTConfig(**values)
    deit.architectures = [DEIT_STUDENT.__name__]
    return deit


def make_deit_student(
    source: PreTrainedModel | PretrainedConfig, layers: Sequence[int] | None = None
) -> DeiTForImageClassificationWithTeacher:
    """A DeiT student with a distillation token.

    ``source`` a config (`ViTConfig` / `DeiTConfig`, with ``num_labels`` / ``id2label``): a new student of that
    shape, initialised as DeiT initialises (DeiT trains its students from scratch). ``source`` a ViT / DeiT image
    classifier: a copy of it that keeps the encoder ``layers`` (default: all, 0-based, strictly increasing); its
    class head initialises both heads, its class token and that token's position embedding the distillation
    token's, so before training the student predicts as the source does.
    """
    if isinstance(source, PretrainedConfig):
        if layers is not None:
            raise ValueError("layers= picks layers of a model to copy; with a config, set its num_hidden_layers.")
        return DEIT_STUDENT(deit_config(source))
    if not isinstance(source, PreTrainedModel):
        raise TypeError(f"make_deit_student takes a ViT / DeiT model or config, got {type(source).__name__}.")
    model_type = source.config.model_type
    num_layers = source.config.num_hidden_layers
    layers = list(range(num_layers)) if layers is None else list(layers)
    check_kept_layers(layers, num_layers, "make_deit_student")
    config = deit_config(source.config, len(layers))
    setattr(config, TEACHER_LAYERS_ATTR, {"layers": layers, "num_layers": num_layers})
    student = DEIT_STUDENT(config)
    student.load_state_dict(_student_state(source, model_type, layers), strict=True)
    return student.to(dtype=source.dtype, device=source.device)


def _student_state(source: PreTrainedModel, model_type: str, layers: list[int]) -> dict[str, torch.Tensor]:
    prefix, index = _PREFIX[model_type], {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in source.state_dict().items():
        value = value.detach().clone()
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            if rest.startswith("pooler."):
                continue  # a ViT pooler: DeiT's heads read the tokens
            if rest.startswith("layers."):
                number, tail = rest[len("layers.") :].split(".", 1)
                if int(number) not in index:
                    continue
                rest = f"layers.{index[int(number)]}.{tail}"
            state[f"deit.{rest}"] = value
        elif key.startswith("classifier."):  # one head initialises both
            state[f"cls_{key}"] = value
            state[f"distillation_{key}"] = value.clone()
        else:
            state[key] = value  # a DeiT-with-teacher source: its own two heads
    if "deit.embeddings.distillation_token" not in state:  # a ViT: one token, one position more
        cls, positions = state["deit.embeddings.cls_token"], state["deit.embeddings.position_embeddings"]
        state["deit.embeddings.distillation_token"] = cls.clone()
        state["deit.embeddings.position_embeddings"] = torch.cat([positions[:, :1], positions], dim=1)
    return state
