"""The prunable structure of a BERT- or ViT-family model: which modules carry heads, FFN neurons and the
residual (hidden) dimension.

Pruning and slicing are written once against `ModelStructure`; the per-architecture knowledge is the two
small functions `_bert` and `_vit` below (module names differ between the families, and BERT is post-LN
while ViT is pre-LN, which changes where the hidden mask must be enforced).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn
from transformers import PreTrainedModel


@dataclass
class LayerParts:
    """One transformer layer. Heads are contiguous blocks of ``head_dim`` rows of query/key/value."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear
    ffn_in: nn.Linear
    ffn_out: nn.Linear


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


def _bert(model: PreTrainedModel) -> ModelStructure:
    base = model.base_model
    emb = base.embeddings
    layers, norms = [], [emb.LayerNorm]
    for layer in base.encoder.layer:
        attention = layer.attention
        layers.append(
            LayerParts(
                query=attention.self.query,
                key=attention.self.key,
                value=attention.self.value,
                attn_out=attention.output.dense,
                ffn_in=layer.intermediate.dense,
                ffn_out=layer.output.dense,
            )
        )
        norms += [attention.output.LayerNorm, layer.output.LayerNorm]
    tables = [HiddenTable(emb.word_embeddings, "weight", 1), HiddenTable(emb.position_embeddings, "weight", 1)]
    if getattr(emb, "token_type_embeddings", None) is not None:
        tables.append(HiddenTable(emb.token_type_embeddings, "weight", 1))
    return _assemble(model, layers, norms, tables, writes=[])


def _vit(model: PreTrainedModel) -> ModelStructure:
    base = model.base_model
    emb = base.embeddings
    layers, norms = [], []
    for layer in base.layers:
        attention = layer.attention
        layers.append(
            LayerParts(
                query=attention.q_proj,
                key=attention.k_proj,
                value=attention.v_proj,
                attn_out=attention.o_proj,
                ffn_in=layer.mlp.fc1,
                ffn_out=layer.mlp.fc2,
            )
        )
        norms += [layer.layernorm_before, layer.layernorm_after]
    norms.append(base.layernorm)
    tables = [HiddenTable(emb, "cls_token", 2), HiddenTable(emb, "position_embeddings", 2)]
    if getattr(emb, "mask_token", None) is not None:
        tables.append(HiddenTable(emb, "mask_token", 2))
    return _assemble(model, layers, norms, tables, writes=[emb.patch_embeddings.projection])


def _assemble(model, layers: list[LayerParts], norms, tables, writes) -> ModelStructure:
    """What every family shares: which modules read / write the hidden size, and the residual-stream writers.

    The embeddings' output and every attention / FFN output projection are masked by the hidden mask: in a
    pre-LN model (ViT) the residual stream is never normalised in place, so that is where pruned channels
    must be zeroed; in a post-LN model (BERT) the following masked LayerNorm would zero them anyway.
    """
    base, config = model.base_model, model.config
    reads = [m for p in layers for m in (p.query, p.key, p.value, p.ffn_in)]
    writes = writes + [m for p in layers for m in (p.attn_out, p.ffn_out)]
    sources = [base.embeddings] + [p.attn_out for p in layers] + [p.ffn_out for p in layers]
    if getattr(base, "pooler", None) is not None:
        reads.append(base.pooler.dense)
        writes.append(base.pooler.dense)
        sources.append(base.pooler.dense)
    _add_heads(model, reads, writes, norms, sources)
    return ModelStructure(
        model_type=config.model_type,
        layers=layers,
        num_heads=config.num_attention_heads,
        head_dim=config.hidden_size // config.num_attention_heads,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        reads_hidden=reads,
        writes_hidden=writes,
        tables=tables,
        norms=norms,
        stream_sources=sources,
    )


def _add_heads(model, reads, writes, norms, sources) -> None:
    """Task heads on top of the encoder: classifiers read the hidden size; an MLM head also writes it."""
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Linear):
        reads.append(classifier)
    elif classifier is not None:
        raise NotImplementedError(f"Pruning does not know the classifier of {type(model).__name__}.")
    cls = getattr(model, "cls", None)
    if cls is not None and hasattr(cls, "predictions"):
        transform = cls.predictions.transform
        reads.append(transform.dense)
        writes.append(transform.dense)
        sources.append(transform.dense)
        norms.append(transform.LayerNorm)
        reads.append(cls.predictions.decoder)  # tied to the word embeddings: sliced once through the tie


_BUILDERS: dict[str, Callable[[PreTrainedModel], ModelStructure]] = {"bert": _bert, "vit": _vit}


def model_structure(model: PreTrainedModel) -> ModelStructure:
    """The `ModelStructure` of a supported model; a clear error names the supported families otherwise."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in _BUILDERS:
        raise NotImplementedError(
            f"Structured pruning supports model types {sorted(_BUILDERS)}, got {model_type!r} "
            f"({type(model).__name__})."
        )
    return _BUILDERS[model_type](model)
