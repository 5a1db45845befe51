"""Everything hf_compress knows about each model family, as data.

One `Family` entry per module layout. Families that transformers generates from one shape (BERT, RoBERTa,
XLM-R, ELECTRA share BERT's module names; ViT, DeiT and BEiT share one vision layout) share one entry.
Module paths are dotted names: encoder paths are relative to ``model.base_model``, per-layer paths relative to
one layer, head paths relative to the task model. A path that a given model does not have (no pooler, no
token-type table) is skipped; the attention / FFN projections must exist.

Nothing outside ``hf_compress/models`` names a model type: the methods ask `family_of(model)` and read the
fields below. Adding a family is one entry here plus a tiny config in ``tests/test_families.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedModel

Modality = Literal["text", "vision"]
HeadRole = Literal["read", "transform", "norm", "read_twice"]

# (path, parameter name, dimension that is the hidden size)
Table = tuple[str, str, int]


@dataclass(frozen=True)
class Family:
    """How one module layout is built.

    Pruning-related fields describe the residual (hidden) dimension: ``tables`` and ``norms`` are skipped when
    their size is not the hidden size (ELECTRA / ALBERT embeddings narrower than the encoder), which is why
    they are candidates and not facts.
    """

    name: str
    model_types: tuple[str, ...]
    modality: Modality
    layers: str  # the encoder's ModuleList, relative to model.base_model
    ln: Literal["pre", "post"]
    # per layer
    query: str = ""
    key: str = ""
    value: str = ""
    attn_out: str = ""
    ffn_in: str = ""
    ffn_out: str = ""
    layer_norms: tuple[str, ...] = ()
    layer_tables: tuple[Table, ...] = ()  # per-layer hidden-sized parameters (layer scales)
    layer_head_tables: tuple[Table, ...] = ()  # per-layer parameters with one entry per head (position biases)
    extra_head_projections: tuple[str, ...] = ()  # per-layer Linears whose output rows are grouped by head
    fused_qkv: bool = False  # query / key / value name one Linear with rows [q | k | v] (ModernBERT's Wqkv)
    glu_ffn: bool = False  # ffn_in rows are [input | gate] (ModernBERT's Wi)
    # encoder level (relative to base_model)
    embeddings: str = "embeddings"
    embedding_projection: str | None = None  # Linear(embedding_size -> hidden) when the tables are narrower
    tables: tuple[Table, ...] = ()
    norms: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()  # modules whose output features are the hidden size (patch projection)
    reads: tuple[str, ...] = ()  # encoder modules whose input features are the hidden size (weight dim 1)
    pooler: tuple[str, ...] = ()  # Linear hidden -> hidden between encoder and head
    # task heads (relative to the task model): role per path
    heads: tuple[tuple[str, HeadRole], ...] = ()
    # config vocabulary
    hidden_field: str = "hidden_size"
    heads_field: str = "num_attention_heads"
    ffn_field: str = "intermediate_size"  # "mlp_ratio" means intermediate = int(hidden * mlp_ratio)
    layers_field: str = "num_hidden_layers"
    follows_hidden: tuple[str, ...] = ()  # config fields equal to the hidden size that must follow it when sliced
    per_layer_fields: tuple[str, ...] = ()  # config lists with one entry per layer (sliced by make_student)
    first_layer_lacks: tuple[str, ...] = ()  # per-layer modules the first layer does not have (Identity there)
    backbone_stages: bool = False  # config.stage_names = ["stem", "stage1", ...]: sliced by make_student
    # what each method cannot do, and why (None = supported)
    attention_kd: str | None = None
    hidden_kd: str | None = None
    prune: str | None = None
    head_prune: str | None = None  # hidden / FFN pruning works but heads cannot be pruned per layer
    shared_head_tables: tuple[str, ...] = ()  # a per-head table shared by all layers: when present, no head pruning
    student: str | None = None
    not_quantizable: tuple[str, ...] = ()  # module-name globs quantize() must leave in float


_BERT_LAYER = dict(
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    attn_out="attention.output.dense",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
    layer_norms=("attention.output.LayerNorm", "output.LayerNorm"),
)
_BERT_TABLES: tuple[Table, ...] = (
    ("embeddings.word_embeddings", "weight", 1),
    ("embeddings.position_embeddings", "weight", 1),
    ("embeddings.token_type_embeddings", "weight", 1),
)
_BERT_HEADS: tuple[tuple[str, HeadRole], ...] = (
    ("classifier", "read"),
    ("qa_outputs", "read"),
    ("cls.predictions.transform.dense", "transform"),
    ("cls.predictions.transform.LayerNorm", "norm"),
    ("cls.predictions.decoder", "read"),
)
_ROBERTA_HEADS: tuple[tuple[str, HeadRole], ...] = (
    ("classifier.dense", "transform"),
    ("classifier.out_proj", "read"),
    ("classifier", "read"),
    ("qa_outputs", "read"),
    ("lm_head.dense", "transform"),
    ("lm_head.layer_norm", "norm"),
    ("lm_head.decoder", "read"),
)
_VIT_LAYER = dict(
    query="attention.q_proj",
    key="attention.k_proj",
    value="attention.v_proj",
    attn_out="attention.o_proj",
    ffn_in="mlp.fc1",
    ffn_out="mlp.fc2",
)
_VISION_TABLES: tuple[Table, ...] = (
    ("embeddings.cls_token", "", 2),
    ("embeddings.distillation_token", "", 2),
    ("embeddings.position_embeddings", "", 2),
    ("embeddings.mask_token", "", 2),
)
_SHARED_LAYERS = (
    "ALBERT shares one set of layer weights across all layers (num_hidden_groups), so there are no separate layers "
    "to pick or prune. Build a shallower ALBERT from its config (num_hidden_layers) and distil into it"
)
_HIERARCHICAL = (
    "Swin is hierarchical: its stages have different widths and token counts, and the depth is a per-stage list "
    "(depths)"
)
_NO_KD_ATTENTION = (
    "computes its {what} outside transformers' AttentionInterface, so hf_compress cannot take its attention maps "
    "before dropout (eager maps come after dropout and no longer sum to 1); set attention_weight=0"
)

FAMILIES: tuple[Family, ...] = (
    Family(
        name="BERT / RoBERTa / XLM-R / CamemBERT / ELECTRA",
        model_types=("bert", "roberta", "xlm-roberta", "camembert", "electra"),
        modality="text",
        layers="encoder.layer",
        ln="post",
        **_BERT_LAYER,
        embedding_projection="embeddings_project",
        tables=_BERT_TABLES,
        norms=("embeddings.LayerNorm",),
        pooler=("pooler.dense",),
        heads=_BERT_HEADS
        + _ROBERTA_HEADS
        + (
            ("generator_predictions.dense", "transform"),
            ("generator_predictions.LayerNorm", "norm"),
            ("generator_lm_head", "read"),
        ),
        follows_hidden=("embedding_size",),
    ),
    Family(
        name="DistilBERT",
        model_types=("distilbert",),
        modality="text",
        layers="transformer.layer",
        ln="post",
        query="attention.q_lin",
        key="attention.k_lin",
        value="attention.v_lin",
        attn_out="attention.out_lin",
        ffn_in="ffn.lin1",
        ffn_out="ffn.lin2",
        layer_norms=("sa_layer_norm", "output_layer_norm"),
        tables=_BERT_TABLES[:2],
        norms=("embeddings.LayerNorm",),
        heads=(
            ("pre_classifier", "transform"),
            ("classifier", "read"),
            ("qa_outputs", "read"),
            ("vocab_transform", "transform"),
            ("vocab_layer_norm", "norm"),
            ("vocab_projector", "read"),
        ),
        hidden_field="dim",
        heads_field="n_heads",
        ffn_field="hidden_dim",
        layers_field="n_layers",
    ),
    Family(
        name="DeBERTa-v2 / v3",
        model_types=("deberta-v2",),
        modality="text",
        layers="encoder.layer",
        ln="post",
        query="attention.self.query_proj",
        key="attention.self.key_proj",
        value="attention.self.value_proj",
        attn_out="attention.output.dense",
        ffn_in="intermediate.dense",
        ffn_out="output.dense",
        layer_norms=("attention.output.LayerNorm", "output.LayerNorm"),
        extra_head_projections=("attention.self.pos_key_proj", "attention.self.pos_query_proj"),
        embedding_projection="embeddings.embed_proj",
        tables=_BERT_TABLES + (("encoder.rel_embeddings", "weight", 1),),
        norms=("embeddings.LayerNorm", "encoder.LayerNorm", "encoder.conv.LayerNorm"),
        # conv_kernel_size > 0 (DeBERTa-v2 xlarge): a Conv1d over the first layer's output, then a LayerNorm.
        reads=("encoder.conv.conv",),
        writes=("encoder.conv.conv",),
        heads=(("pooler.dense", "transform"),) + _BERT_HEADS,
        follows_hidden=("embedding_size", "pooler_hidden_size"),
        attention_kd="DeBERTa-v2/v3 " + _NO_KD_ATTENTION.format(what="disentangled attention"),
        not_quantizable=("*rel_embeddings",),  # read as .weight by the attention, never called as a module
    ),
    Family(
        name="MPNet",
        model_types=("mpnet",),
        modality="text",
        layers="encoder.layer",
        ln="post",
        query="attention.attn.q",
        key="attention.attn.k",
        value="attention.attn.v",
        attn_out="attention.attn.o",
        ffn_in="intermediate.dense",
        ffn_out="output.dense",
        layer_norms=("attention.LayerNorm", "output.LayerNorm"),
        tables=_BERT_TABLES[:2],
        norms=("embeddings.LayerNorm",),
        pooler=("pooler.dense",),
        heads=_ROBERTA_HEADS,
        attention_kd="MPNet " + _NO_KD_ATTENTION.format(what="relative-position attention"),
        shared_head_tables=("encoder.relative_attention_bias",),
        head_prune=(
            "MPNet shares one relative-position bias table (one column per head) across all layers, so heads cannot "
            "be pruned layer by layer"
        ),
    ),
    Family(
        name="ModernBERT",
        model_types=("modernbert",),
        modality="text",
        layers="layers",
        ln="pre",
        query="attn.Wqkv",
        key="attn.Wqkv",
        value="attn.Wqkv",
        attn_out="attn.Wo",
        ffn_in="mlp.Wi",
        ffn_out="mlp.Wo",
        fused_qkv=True,
        glu_ffn=True,
        layer_norms=("attn_norm", "mlp_norm"),
        tables=(("embeddings.tok_embeddings", "weight", 1),),
        norms=("embeddings.norm", "final_norm"),
        heads=(
            ("head.dense", "transform"),
            ("head.norm", "norm"),
            ("classifier", "read"),
            ("decoder", "read"),
        ),
        per_layer_fields=("layer_types",),
        first_layer_lacks=("attn_norm",),  # layer 0 reads the already normalised embeddings
    ),
    Family(
        name="ALBERT",
        model_types=("albert",),
        modality="text",
        layers="encoder.albert_layer_groups",
        ln="post",
        prune=_SHARED_LAYERS,
        student=_SHARED_LAYERS,
    ),
    Family(
        name="ViT / DeiT / BEiT",
        model_types=("vit", "deit", "beit"),
        modality="vision",
        layers="layers",
        ln="pre",
        **_VIT_LAYER,
        layer_norms=("layernorm_before", "layernorm_after"),
        layer_tables=(("", "lambda_1", 0), ("", "lambda_2", 0)),
        layer_head_tables=(("relative_position_bias", "relative_position_bias_table", 1),),
        shared_head_tables=("shared_position_bias",),  # BEiT with use_shared_relative_position_bias
        tables=_VISION_TABLES,
        norms=("layernorm", "pooler.layernorm"),
        writes=("embeddings.patch_embeddings.projection",),
        pooler=("pooler.dense",),
        heads=(("classifier", "read"), ("cls_classifier", "read"), ("distillation_classifier", "read")),
        follows_hidden=("pooler_output_size",),  # ViT's pooler writes the hidden size, sliced with it
        backbone_stages=True,
    ),
    Family(
        name="DINOv2",
        model_types=("dinov2",),
        modality="vision",
        layers="encoder.layer",
        ln="pre",
        **_VIT_LAYER,
        layer_norms=("norm1", "norm2"),
        layer_tables=(("layer_scale1", "lambda1", 0), ("layer_scale2", "lambda1", 0)),
        tables=(
            ("embeddings.cls_token", "", 2),
            ("embeddings.position_embeddings", "", 2),
            ("embeddings.mask_token", "", 1),
        ),
        norms=("layernorm",),
        writes=("embeddings.patch_embeddings.projection",),
        heads=(("classifier", "read_twice"),),  # reads [CLS ; mean of the patch tokens]
        ffn_field="mlp_ratio",
        backbone_stages=True,
    ),
    Family(
        name="Swin",
        model_types=("swin",),
        modality="vision",
        layers="encoder.layers",
        ln="pre",
        hidden_kd=_HIERARCHICAL + ", so its hidden states cannot be matched layer by layer; use prediction KD only "
        "(hidden_weight=embedding_weight=0)",
        attention_kd=_HIERARCHICAL
        + ", so its attention maps cannot be matched layer by layer; set attention_weight=0",
        prune=_HIERARCHICAL + "; one pruned width per model does not fit its config. Distil into a smaller Swin "
        "built from its config instead",
        student=_HIERARCHICAL + "; build a shallower Swin from its config (depths) instead",
    ),
)

_BY_TYPE: dict[str, Family] = {t: family for family in FAMILIES for t in family.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_TYPE)


def find_family(model: PreTrainedModel) -> Family | None:
    """The `Family` entry of ``model``, or None for a model type the table does not know."""
    return _BY_TYPE.get(getattr(model.config, "model_type", None))


def family_of(model: PreTrainedModel) -> Family:
    """The `Family` entry of ``model``; a clear error lists the supported model types otherwise."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in _BY_TYPE:
        raise NotImplementedError(
            f"hf_compress does not know the layout of model type {model_type!r} ({type(model).__name__}); supported "
            f"model types: {', '.join(supported_model_types())}."
        )
    return _BY_TYPE[model_type]


def refuse(reason: str | None, what: str) -> None:
    """Raise the family's refusal for ``what`` (one sentence: what cannot be done, why, what to do)."""
    if reason is not None:
        raise NotImplementedError(f"{what} is not supported: {reason}.")


def not_quantizable(model: PreTrainedModel) -> list[str]:
    """Module-name globs that quantize() must leave in float for this model (empty for unknown families)."""
    family = find_family(model)
    return list(family.not_quantizable) if family is not None else []
