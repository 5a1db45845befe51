"""Build a shallower student from a teacher, DistilBERT-style."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from transformers import PretrainedConfig, PreTrainedModel

from ..models.arch import find_layer_list
from ..models.families import Family, family_of, refuse
from .deit_student import make_deit_student
from .matching import TEACHER_LAYERS_ATTR, check_kept_layers


def make_student(
    teacher: PreTrainedModel | PretrainedConfig,
    layers: Sequence[int] | None = None,
    *,
    distillation_token: bool = False,
) -> PreTrainedModel:
    """A copy of ``teacher`` that keeps only the encoder ``layers`` (0-based, strictly increasing).

    ``distillation_token=True`` (a ViT / DeiT teacher, or a ViT / DeiT config for a new student): DeiT's two-head
    student instead, `deit_student.make_deit_student` (``layers`` default: all).

    The embeddings, the chosen layers and everything after the encoder (pooler, final LayerNorm, task head)
    are copied. The result is the teacher's own class with a standard config whose layer count and per-layer
    fields (ModernBERT's ``layer_types``, a backbone's ``stage_names`` / ``out_features``) follow the kept
    layers, plus a small JSON record of the teacher layers it was made from (the default ``layer_map="auto"``
    maps each student layer to that teacher layer), so it saves and reloads with plain ``from_pretrained``.
    """
    if distillation_token:
        return make_deit_student(teacher, layers)
    if isinstance(teacher, PretrainedConfig):
        raise TypeError(
            "make_student copies layers of a model; a config builds a new one: AutoModelFor...from_config(config), "
            "or make_student(config, distillation_token=True) for a DeiT student."
        )
    if layers is None:
        raise ValueError("make_student needs the teacher layers to keep, e.g. layers=[0, 2, 4].")
    refuse(family_of(teacher).student, f"make_student for {type(teacher).__name__}")
    layer_list_name, layer_list = find_layer_list(teacher)
    num_layers = len(layer_list)
    layers = list(layers)
    check_kept_layers(layers, num_layers, "make_student")

    prefix = f"{layer_list_name}."
    new_index = {old: new for new, old in enumerate(layers)}
    # A module only layers after the first have (ModernBERT's attn_norm) is dropped when that layer moves to 0.
    dropped = tuple(f"{prefix}0.{name}." for name in family_of(teacher).first_layer_lacks)
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix) :].split(".", 1)
            if int(index) not in new_index:
                continue
            key = f"{prefix}{new_index[int(index)]}.{rest}"
            if key.startswith(dropped):
                continue
        state[key] = value.detach().clone()

    config = student_config(teacher.config, family_of(teacher), layers)
    setattr(config, TEACHER_LAYERS_ATTR, {"layers": layers, "num_layers": num_layers})
    student = type(teacher)(config)
    student.load_state_dict(state, strict=True)
    student.to(dtype=teacher.dtype, device=teacher.device)
    return student


def student_config(config: PretrainedConfig, family: Family, layers: list[int]) -> PretrainedConfig:
    """A copy of ``config`` with only ``layers`` left: the layer count and every per-layer config field."""
    config = copy.deepcopy(config)
    setattr(config, family.layers_field, len(layers))
    for name in family.per_layer_fields:
        values = getattr(config, name, None)
        if values is not None:
            setattr(config, name, [values[i] for i in layers])
    if family.backbone_stages and getattr(config, "stage_names", None) is not None:
        # stage 0 is the stem, stage i + 1 the output of layer i; keep the teacher's outputs that survive.
        stage_of = {0: 0} | {old + 1: new + 1 for new, old in enumerate(layers)}
        num_stages = len(config.stage_names)
        kept = [stage_of[i % num_stages] for i in (config.out_indices or []) if i % num_stages in stage_of]
        config.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(layers) + 1)]
        config.set_output_features_output_indices(out_features=None, out_indices=kept or None)
    return config
