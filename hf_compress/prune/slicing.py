"""Physically remove masked structures: a dense, smaller model of the same class with a standard config."""

from __future__ import annotations

import copy
from collections import defaultdict

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from ..distill.matching import TEACHER_LAYERS_ATTR
from ..models.arch import find_layer_list
from ..models.structure import ModelStructure, model_structure
from .masks import StructureMasks, kept_indices


def check_shape(structure: ModelStructure, hidden: int, heads: int) -> None:
    """transformers' BERT / ViT fix head_dim = hidden_size / num_attention_heads; whole-head pruning keeps
    head_dim, so a reloadable model needs hidden == heads * head_dim."""
    if hidden != heads * structure.head_dim:
        raise ValueError(
            f"A model with hidden size {hidden} and {heads} heads does not load with a stock config: transformers "
            f"computes head_dim = hidden_size / num_attention_heads, and pruning whole heads keeps head_dim = "
            f"{structure.head_dim}. Use {hidden // structure.head_dim or 1} heads for hidden size {hidden}, or "
            f"hidden size {heads * structure.head_dim} for {heads} heads."
        )


def _selections(model: nn.Module, structure: ModelStructure, masks: StructureMasks) -> dict[str, dict[int, Tensor]]:
    """state-dict key -> {dim: kept indices} for every tensor that shrinks."""
    module_name = {id(m): n for n, m in model.named_modules()}
    selections: dict[str, dict[int, Tensor]] = defaultdict(dict)

    def select(module: nn.Module, param: str, dim: int, index: Tensor) -> None:
        if getattr(module, param, None) is None:
            return
        prefix = module_name[id(module)]
        selections[f"{prefix}.{param}" if prefix else param][dim] = index

    hidden = kept_indices(masks.hidden)
    for module in structure.reads_hidden:
        select(module, "weight", 1, hidden)
    for module in structure.writes_hidden:
        select(module, "weight", 0, hidden)
        select(module, "bias", 0, hidden)
    for table in structure.tables:
        select(table.module, table.name, table.dim, hidden)
    for norm in structure.norms:
        select(norm, "weight", 0, hidden)
        select(norm, "bias", 0, hidden)
    head_dim = structure.head_dim
    for layer, parts in enumerate(structure.layers):
        heads = kept_indices(masks.heads[layer])
        rows = (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()
        for proj in (parts.query, parts.key, parts.value):
            select(proj, "weight", 0, rows)
            select(proj, "bias", 0, rows)
        select(parts.attn_out, "weight", 1, rows)
        neurons = kept_indices(masks.ffn[layer])
        select(parts.ffn_in, "weight", 0, neurons)
        select(parts.ffn_in, "bias", 0, neurons)
        select(parts.ffn_out, "weight", 1, neurons)
    return selections


@torch.no_grad()
def slice_model(model: PreTrainedModel, masks: StructureMasks) -> PreTrainedModel:
    """A new model of ``type(model)`` without the masked structures; ``model`` is left untouched.

    Every kept layer must keep the same number of heads and of FFN neurons (a stock config has one number of
    each), and the kept hidden size must equal kept heads x head_dim. Layers dropped by ``masks.layers`` are
    removed (``num_hidden_layers`` shrinks) and the config records which of ``model``'s layers remain, so a
    later distillation maps each layer to the one it came from (``layer_map="auto"``).
    """
    structure = model_structure(model)
    kept_layers = kept_indices(masks.layers)
    head_counts = set(masks.heads[kept_layers].sum(1).int().tolist())
    ffn_counts = set(masks.ffn[kept_layers].sum(1).int().tolist())
    if len(head_counts) != 1 or len(ffn_counts) != 1:
        raise ValueError(
            f"Every layer must keep the same number of heads and FFN neurons to fit a standard config; kept heads "
            f"per layer {sorted(head_counts)}, FFN neurons {sorted(ffn_counts)}."
        )
    hidden, heads, ffn = int(masks.hidden.sum()), head_counts.pop(), ffn_counts.pop()
    check_shape(structure, hidden, heads)

    selections = _selections(model, structure, masks)
    num_layers = len(structure.layers)
    renumber = {old: new for new, old in enumerate(kept_layers.tolist())}
    prefix = f"{find_layer_list(model)[0]}." if len(renumber) < num_layers else None
    state = {}
    for key, value in model.state_dict().items():
        if prefix and key.startswith(prefix):
            index, rest = key[len(prefix) :].split(".", 1)
            if int(index) not in renumber:
                continue
            key_out = f"{prefix}{renumber[int(index)]}.{rest}"
        else:
            key_out = key
        for dim, index in selections.get(key, {}).items():
            value = value.index_select(dim, index.to(value.device))
        state[key_out] = value.clone()

    config = copy.deepcopy(model.config)
    if prefix:
        config.num_hidden_layers = len(renumber)
        setattr(config, TEACHER_LAYERS_ATTR, {"layers": kept_layers.tolist(), "num_layers": num_layers})
    if getattr(config, "pooler_output_size", None) == config.hidden_size:
        config.pooler_output_size = hidden  # ViT's pooler writes the hidden size, sliced with it
    config.hidden_size, config.num_attention_heads, config.intermediate_size = hidden, heads, ffn
    sliced = type(model)(config)
    sliced.load_state_dict(state, strict=True)
    sliced.to(dtype=model.dtype, device=model.device)
    return sliced.train(model.training)
