"""Physically remove masked structures: a dense, smaller model of the same class with a standard config."""

from __future__ import annotations

import copy
from collections import defaultdict

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from ..distill.matching import TEACHER_LAYERS_ATTR
from ..distill.student import student_config
from ..models.arch import find_layer_list
from ..models.structure import ModelStructure, model_structure
from .masks import StructureMasks, kept_indices


def check_shape(structure: ModelStructure, hidden: int, heads: int) -> None:
    """transformers' encoders fix head_dim = hidden_size / num_attention_heads; whole-head pruning keeps
    head_dim, so a reloadable model needs hidden == heads * head_dim."""
    if hidden != heads * structure.head_dim:
        raise ValueError(
            f"A model with hidden size {hidden} and {heads} heads does not load with a stock config: transformers "
            f"computes head_dim = hidden_size / num_attention_heads, and pruning whole heads keeps head_dim = "
            f"{structure.head_dim}. Use {hidden // structure.head_dim or 1} heads for hidden size {hidden}, or "
            f"hidden size {heads * structure.head_dim} for {heads} heads."
        )


def check_ffn(structure: ModelStructure, hidden: int, ffn: int) -> None:
    """Families whose config gives the FFN width as an integer mlp_ratio need ffn to be a multiple of hidden."""
    if structure.family.ffn_field == "mlp_ratio" and ffn % hidden:
        raise ValueError(
            f"{structure.model_type} sets its FFN width as hidden_size x mlp_ratio (an integer), so {ffn} FFN neurons "
            f"do not fit hidden size {hidden}. Choose target_intermediate_size = {hidden} x an integer (e.g. "
            f"{hidden * max(1, ffn // hidden)})."
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
    for module in structure.reads_hidden_twice:
        select(module, "weight", 1, torch.cat([hidden, hidden + structure.hidden_size]))
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
        neurons = kept_indices(masks.ffn[layer])
        for blocks, index in ((parts.head_blocks(), rows), (parts.ffn_blocks(), neurons)):
            by_module: dict[int, tuple[nn.Module, list[Tensor]]] = {}
            for proj, offset in blocks:  # a fused projection keeps the same rows of each of its blocks
                by_module.setdefault(id(proj), (proj, []))[1].append(index + offset)
            for proj, parts_rows in by_module.values():
                select(proj, "weight", 0, torch.cat(parts_rows))
                select(proj, "bias", 0, torch.cat(parts_rows))
        for table in parts.head_tables:
            select(table.module, table.name, table.dim, heads)
        select(parts.attn_out, "weight", 1, rows)
        select(parts.ffn_out, "weight", 1, neurons)
    return selections


def sliced_config(config, structure: ModelStructure, hidden: int, heads: int, ffn: int):
    """A copy of ``config`` with the new widths, under the family's field names."""
    family = structure.family
    config = copy.deepcopy(config)
    for name in family.follows_hidden:  # e.g. ELECTRA's embedding_size when it equals the hidden size
        if getattr(config, name, None) == structure.hidden_size:
            setattr(config, name, hidden)
    setattr(config, family.hidden_field, hidden)
    setattr(config, family.heads_field, heads)
    if getattr(config, "attention_head_size", None) is not None:
        config.attention_head_size = structure.head_dim
    if family.ffn_field == "mlp_ratio":  # the FFN width is hidden_size * mlp_ratio (an int in the config)
        check_ffn(structure, hidden, ffn)
        config.mlp_ratio = ffn // hidden
    else:
        setattr(config, family.ffn_field, ffn)
    return config


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

    config = sliced_config(model.config, structure, hidden, heads, ffn)
    if prefix:  # whole layers dropped: the layer count and per-layer fields follow, as in make_student
        config = student_config(config, structure.family, kept_layers.tolist())
        setattr(config, TEACHER_LAYERS_ATTR, {"layers": kept_layers.tolist(), "num_layers": num_layers})
    sliced = type(model)(config)
    sliced.load_state_dict(state, strict=True)
    sliced.to(dtype=model.dtype, device=model.device)
    return sliced.train(model.training)
