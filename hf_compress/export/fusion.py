"""ONNX Runtime's transformer fusions applied to an exported encoder graph.

ORT runs the graph torch's exporter writes op by op: for BERT that is ~670 nodes, and on a 2-core AVX2 CPU it is
slower than torch (whose SDPA kernel is fused). ORT's own offline optimizer (`onnxruntime.transformers`) rewrites
the graph into its fused kernels -- ``Attention``, ``EmbedLayerNormalization``, ``SkipLayerNormalization``,
``BiasGelu`` -- when it recognises the pattern, which it does for the *eager* attention graph (the SDPA graph's
NaN guard hides the attention pattern). So a fusable model is exported with eager attention and then fused.

Quantized graphs keep the checkpoint's int8 Q/K/V MatMuls: attention fusion (which would pack fp32 Q/K/V weights
into one fp32 ``Attention`` op, a different quantization) is off for them; the other fusions apply. The caller
verifies the fused graph against PyTorch like any export and keeps the unfused one if the check fails.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from torch import nn

# config.model_type -> the model_type of ORT's optimizer whose fusions match its graph
OPTIMIZER_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "electra": "bert",
    "vit": "vit",
    "deit": "vit",
}

logger = logging.getLogger(__name__)


def optimizer_type(model: nn.Module) -> str | None:
    """ORT optimizer model_type for this model, or None (no fusion: RNN student, unknown families)."""
    config = getattr(model, "config", None)
    return OPTIMIZER_TYPES.get(getattr(config, "model_type", None))


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run ``model`` with eager attention inside the block (the graph ORT's attention fusion recognises)."""
    config = model.config
    before = getattr(config, "_attn_implementation", None)
    if before in (None, "eager") or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def fuse(proto, model: nn.Module, quantized: bool):
    """(fused ModelProto, {fused op: count}); the count is empty when ORT fused nothing. ``quantized``: the
    graph has int8 / int4 linear layers (attention fusion off)."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = optimizer_type(model)
    options = FusionOptions(model_type)
    # The 2-D mask as it is: ORT's default turns it into a valid length (attend to [0, sum(mask))), which is
    # wrong for left padding and holes.
    options.use_raw_attention_mask(True)
    if quantized:
        options.enable_attention = False  # the checkpoint's int8 Q/K/V stay as they are
    config = model.config
    with contextlib.redirect_stdout(None):
        fused = optimize_model(proto, model_type=model_type, num_heads=getattr(config, "num_attention_heads", 0),
                               hidden_size=getattr(config, "hidden_size", 0), optimization_options=options,
                               opt_level=0)  # fmt: skip
    stats = {name: count for name, count in fused.get_fused_operator_statistics().items() if count}
    proto = fused.model
    domains = {node.domain for node in proto.graph.node if node.domain}
    declared = {opset.domain for opset in proto.opset_import}
    for domain in sorted(domains - declared):  # ORT runs without it; ONNX tools (shape inference) need it
        proto.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    return typed(proto), stats


def typed(proto):
    """``proto`` with a type and shape on every value, ORT's contrib ops included (ORT's symbolic shape inference:
    ONNX's own leaves their outputs untyped, and tools that post-process the graph, such as optimum's quantizer,
    then fail to find their data types). Left as it is, with a log line, where the inference fails."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        return SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
    except Exception as err:  # the inference's own matchers raise many kinds; the graph still runs on ORT
        logger.info("symbolic shape inference failed on the fused graph (%s); saved without value types", err)
        return proto
