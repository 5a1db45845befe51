"""Build a shallower student from a teacher, DistilBERT-style."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from transformers import PreTrainedModel

from ..models.arch import find_layer_list
from .matching import TEACHER_LAYERS_ATTR


def make_student(teacher: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """A copy of ``teacher`` that keeps only the encoder ``layers`` (0-based, strictly increasing).

    The embeddings, the chosen layers and everything after the encoder (pooler, final LayerNorm, task head)
    are copied. The result is the teacher's own class with a standard config whose only changes are
    ``num_hidden_layers`` and a small JSON record of the teacher layers it was made from (the default
    ``layer_map="auto"`` maps each student layer to that teacher layer), so it saves and reloads with plain
    ``from_pretrained``.
    """
    num_layers = teacher.config.num_hidden_layers
    layers = list(layers)
    if not layers:
        raise ValueError("make_student needs at least one layer to keep, e.g. layers=[0, 2, 4].")
    if any(not isinstance(i, int) or isinstance(i, bool) for i in layers):
        raise TypeError(f"make_student layers must be ints, got {layers!r}.")
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"make_student layers {bad} are out of range: the teacher has layers 0..{num_layers - 1}.")
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"make_student layers must be strictly increasing (no repeats), got {layers}.")

    layer_list_name, _ = find_layer_list(teacher)
    prefix = f"{layer_list_name}."
    new_index = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix) :].split(".", 1)
            if int(index) not in new_index:
                continue
            key = f"{prefix}{new_index[int(index)]}.{rest}"
        state[key] = value.detach().clone()

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    setattr(config, TEACHER_LAYERS_ATTR, {"layers": layers, "num_layers": num_layers})
    student = type(teacher)(config)
    student.load_state_dict(state, strict=True)
    student.to(dtype=teacher.dtype, device=teacher.device)
    return student
