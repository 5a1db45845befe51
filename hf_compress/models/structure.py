"""The prunable structure of a model: which modules carry heads, FFN neurons and the residual (hidden) dimension.

Pruning and slicing are written once against `ModelStructure`; `model_structure` builds it from the model's
`families.Family` entry (module paths, pre- or post-LN), so no method here or elsewhere names a model type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from transformers import PreTrainedModel

from .families import Family, family_of, refuse


@dataclass
class LayerParts:
    """One transformer layer. Heads are contiguous blocks of ``head_dim`` rows of query/key/value."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear
    ffn_in: nn.Linear
    ffn_out: nn.Linear
    # More Linears whose output rows are grouped by head (DeBERTa's separate position projections).
    head_projections: list[nn.Linear] = field(default_factory=list)
    # Parameters with one entry per head along ``dim`` (BEiT's relative position bias table).
    head_tables: list[HiddenTable] = field(default_factory=list)
    fused_qkv: bool = False  # query is key is value: one Linear with rows [q heads | k heads | v heads]
    glu_ffn: bool = False  # ffn_in rows are [input | gate], each one row per FFN neuron

    def head_blocks(self) -> list[tuple[nn.Linear, int]]:
        """(Linear, row offset) of every block of ``num_heads * head_dim`` output rows grouped by head."""
        if self.fused_qkv:
            width = self.query.out_features // 3
            blocks = [(self.query, 0), (self.query, width), (self.query, 2 * width)]
        else:
            blocks = [(self.query, 0), (self.key, 0), (self.value, 0)]
        return blocks + [(p, 0) for p in self.head_projections]

    def ffn_blocks(self) -> list[tuple[nn.Linear, int]]:
        """(Linear, row offset) of every block of output rows with one row per FFN neuron."""
        if self.glu_ffn:
            return [(self.ffn_in, 0), (self.ffn_in, self.ffn_in.out_features // 2)]
        return [(self.ffn_in, 0)]


@dataclass
class HiddenTable:
    """A parameter whose dimension ``dim`` is the hidden size (embedding tables, CLS token, positions)."""

    module: nn.Module
    name: str
    dim: int


@dataclass
class ModelStructure:
    model_type: str
    layers: list[LayerParts]
    num_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    reads_hidden: list[nn.Module] = field(default_factory=list)  # input features = hidden (Linear)
    writes_hidden: list[nn.Module] = field(default_factory=list)  # output features = hidden (Linear / Conv2d)
    tables: list[HiddenTable] = field(default_factory=list)
    norms: list[nn.LayerNorm] = field(default_factory=list)  # LayerNorms over the hidden dimension
    # Modules whose *output* must be multiplied by the hidden mask for a masked model to equal the sliced one.
    stream_sources: list[nn.Module] = field(default_factory=list)
    # Linears whose input is two hidden-sized vectors concatenated (DINOv2's classifier: [CLS ; mean patch]).
    reads_hidden_twice: list[nn.Linear] = field(default_factory=list)
    family: Family | None = None
    # Why heads cannot be pruned layer by layer (a per-head table shared by all layers), or None.
    head_prune_refusal: str | None = None


def _get(root: nn.Module, path: str) -> nn.Module | None:
    module = root
    for part in path.split(".") if path else []:
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _required(root: nn.Module, path: str, where: str) -> nn.Linear:
    module = _get(root, path)
    if not isinstance(module, nn.Linear):
        raise NotImplementedError(
            f"Expected a Linear layer at {where}.{path}, found {type(module).__name__}: this model's layout differs "
            "from its family entry in hf_compress/models/families.py."
        )
    return module


def _table(root: nn.Module, spec: tuple[str, str, int], size: int) -> HiddenTable | None:
    """The table if it exists and its ``dim`` has ``size`` entries (narrower ELECTRA / ALBERT embeddings do not)."""
    path, name, dim = spec
    if name:
        module = _get(root, path)
    else:  # a bare nn.Parameter attribute: module path + attribute
        module, _, name = path.rpartition(".")
        module = _get(root, module)
    param = getattr(module, name, None) if module is not None else None
    if param is None or param.dim() <= dim or param.shape[dim] != size:
        return None
    return HiddenTable(module, name, dim)


def _norm(root: nn.Module, path: str, hidden: int) -> nn.LayerNorm | None:
    module = _get(root, path)
    if isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (hidden,):
        return module
    return None


def _layers(family: Family, layer_list: nn.ModuleList, num_heads: int, hidden: int):
    """Each encoder layer's parts, with the norms, tables and head projections that read or scale the hidden size:
    ``(layers, norms, tables, reads)``."""
    layers, norms, tables, reads = [], [], [], []
    for index, layer in enumerate(layer_list):
        where = f"{family.layers}.{index}"
        parts = LayerParts(
            **{
                role: _required(layer, getattr(family, role), where)
                for role in ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
            }
        )
        parts.fused_qkv, parts.glu_ffn = family.fused_qkv, family.glu_ffn
        parts.head_projections = [
            m for p in family.extra_head_projections if isinstance(m := _get(layer, p), nn.Linear)
        ]
        parts.head_tables = [t for spec in family.layer_head_tables if (t := _table(layer, spec, num_heads))]
        reads += parts.head_projections
        layers.append(parts)
        norms += [n for path in family.layer_norms if (n := _norm(layer, path, hidden))]
        tables += [t for spec in family.layer_tables if (t := _table(layer, spec, hidden))]
    return layers, norms, tables, reads


def _task_heads(model, family: Family, hidden: int, reads: list, writes: list, sources: list, norms: list) -> list:
    """Add the task heads' Linears and norms that read (or write) the hidden size to ``reads`` / ``writes`` /
    ``sources`` / ``norms``; return the heads that read it twice (a concatenation of two positions)."""
    twice = []
    for path, role in family.heads:
        module = _get(model, path)
        if role == "norm":
            if (norm := _norm(model, path, hidden)) is not None:
                norms.append(norm)
            continue
        if not isinstance(module, nn.Linear) or any(module is m for m in reads + twice):
            continue
        if module.in_features != (2 * hidden if role == "read_twice" else hidden):
            continue  # reads the narrower embedding width (ELECTRA's generator decoder)
        if role == "read_twice":
            twice.append(module)
            continue
        reads.append(module)
        if role == "transform" and module.out_features == hidden:
            writes.append(module)
            sources.append(module)
    return twice


def model_structure(model: PreTrainedModel) -> ModelStructure:
    """The `ModelStructure` of a supported model, or a clear refusal naming why its family cannot be pruned."""
    family = family_of(model)
    refuse(family.prune, f"Structured pruning of {type(model).__name__}")
    base, config = model.base_model, model.config
    hidden = int(getattr(config, family.hidden_field))
    num_heads = int(getattr(config, family.heads_field))
    head_dim = int(getattr(config, "attention_head_size", None) or hidden // num_heads)
    layer_list = _get(base, family.layers)

    layers, norms, tables, reads = _layers(family, layer_list, num_heads, hidden)
    writes: list[nn.Module] = []
    if not layers:
        raise NotImplementedError(f"{type(model).__name__} has no encoder layers at {family.layers}.")
    ffn_size = layers[0].ffn_in.out_features // (2 if family.glu_ffn else 1)

    tables += [t for spec in family.tables if (t := _table(base, spec, hidden))]
    norms += [n for path in family.norms if (n := _norm(base, path, hidden))]
    writes += [m for path in family.writes if (m := _get(base, path)) is not None]
    reads += [m for path in family.reads if (m := _get(base, path)) is not None]
    grouped = [m for m in reads if isinstance(m, nn.Conv1d) and m.groups != 1]
    if grouped:
        raise NotImplementedError(
            f"Structured pruning of {type(model).__name__} is not supported with a grouped convolution over the "
            "hidden size (conv_groups > 1): its channels cannot be sliced independently."
        )
    reads += [m for p in layers for m in dict.fromkeys((p.query, p.key, p.value, p.ffn_in))]  # fused: once
    writes += [m for p in layers for m in (p.attn_out, p.ffn_out)]
    # The residual stream starts at the embeddings (or at their projection when the tables are narrower).
    projection = _get(base, family.embedding_projection) if family.embedding_projection else None
    sources = [projection if isinstance(projection, nn.Linear) else _get(base, family.embeddings)]
    if isinstance(projection, nn.Linear):
        writes.append(projection)
    sources += [p.attn_out for p in layers] + [p.ffn_out for p in layers]
    for path in family.pooler:
        if isinstance(pooler := _get(base, path), nn.Linear):
            reads.append(pooler)
            writes.append(pooler)
            sources.append(pooler)

    twice = _task_heads(model, family, hidden, reads, writes, sources, norms)
    _check_heads(model, family, reads + twice)
    shared = [path for path in family.shared_head_tables if _get(base, path) is not None]
    head_refusal = family.head_prune or (
        shared
        and f"{shared[0]} holds one bias per head shared by all layers, so heads cannot be pruned layer by layer"
    )
    return ModelStructure(
        model_type=config.model_type,
        layers=layers,
        num_heads=num_heads,
        head_dim=head_dim,
        hidden_size=hidden,
        intermediate_size=ffn_size,
        reads_hidden=reads,
        writes_hidden=writes,
        tables=tables,
        norms=norms,
        stream_sources=sources,
        reads_hidden_twice=twice,
        family=family,
        head_prune_refusal=head_refusal or None,
    )


def _check_heads(model: PreTrainedModel, family: Family, known: list[nn.Module]) -> None:
    """Every Linear outside the encoder must be one the family entry knows: an unknown task head would keep
    its old input width and break slicing much later."""
    inside = {id(m) for m in model.base_model.modules()}
    known_ids = {id(m) for m in known}
    tied = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    unknown = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and id(m) not in inside and id(m) not in known_ids and m is not tied
    ]
    if unknown:
        raise NotImplementedError(
            f"Structured pruning does not know the head of {type(model).__name__} ({', '.join(unknown)}); "
            f"add its modules to the {family.name} entry in hf_compress/models/families.py."
        )
