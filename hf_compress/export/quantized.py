"""Quantized checkpoints to int8 ONNX carrying the same decisions as the PyTorch model.

No exporter understands hf_compress's quantized layers (they call fbgemm kernels), so the export is two steps:

1. `float_stand_ins` swaps every quantized Linear for a stand-in that computes ``x @ weight_t + bias`` with its
   *dequantized* weight held in a buffer named ``weight_t`` (the initializer that the MatMul reads, so the layer
   is found by name in the graph). Int8 embeddings become an int8 Gather + per-row scale, which exports as is.
2. `rewrite_quantized` replaces each such MatMul (or Gemm) with the integer subgraph of its kind, using the
   checkpoint's own int8 / int4 weights and scales (never re-quantized):

   ``int8_dynamic``      per-call 7-bit QuantizeLinear (fbgemm's range rule) -> MatMulInteger -> Cast ->
                         Mul(x_scale * w_scale); or with ``dynamic="ort"`` ORT's own DynamicQuantizeLinear
                         (8 bits, the quantize_dynamic pattern, fused into DynamicQuantizeMatMul at load)
   ``int8_static``       QuantizeLinear(calibrated scale, zero point) -> MatMulInteger -> Cast -> Mul
   ``int8_weight_only``  Cast(int8 weight) * per-channel scale -> MatMul (float activations, as in torch)
   ``int4_weight_only``  com.microsoft MatMulNBits (same nibble packing and zero point 8 as our checkpoints)

Layers kept in fp32 are not touched; SmoothQuant's ``x / smooth`` stays a float Div in front of the layer.
The weights and their scales are bit-identical to the checkpoint's.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..quant.modules import (
    Int4WeightOnlyLinear,
    Int8DynamicLinear,
    Int8Embedding,
    Int8StaticLinear,
    Int8WeightOnlyLinear,
    _Int8Linear,
)
from ..quant.serialization import MARKER, replace_module

DynamicActivations = Literal["torch", "ort"]
KIND_OF = {
    Int8DynamicLinear: "int8_dynamic",
    Int8StaticLinear: "int8_static",
    Int8WeightOnlyLinear: "int8_weight_only",
    Int4WeightOnlyLinear: "int4_weight_only",
}
STAND_IN_BUFFER = "weight_t"


class ExportError(ValueError):
    """A model or folder that cannot be exported; the message says why and what to do."""


class _LinearStandIn(nn.Module):
    """``x @ weight_t + bias`` with the dequantized weight: float semantics, findable by its buffer name."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.register_buffer(STAND_IN_BUFFER, layer.dequantized_weight().t().contiguous())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float().clone())
        smooth = getattr(layer, "input_smooth", None)
        self.register_buffer("input_smooth", None if smooth is None else smooth.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        if self.input_smooth is not None:
            x = x / self.input_smooth
        out = torch.matmul(x, self.weight_t)
        return out if self.bias is None else out + self.bias


class _EmbeddingStandIn(nn.Module):
    """int8 table (rows, dim) and a scale per row: an int8 Gather, a Cast and a Mul in ONNX."""

    def __init__(self, layer: Int8Embedding) -> None:
        super().__init__()
        self.register_buffer("weight_q", layer.weight.view(layer.num_embeddings, layer.embedding_dim).clone())
        self.register_buffer("weight_scale", layer.weight_scale.detach().clone())

    def forward(self, ids: Tensor) -> Tensor:
        return self.weight_q[ids].float() * self.weight_scale[ids].unsqueeze(-1)


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (_Int8Linear, Int4WeightOnlyLinear, Int8Embedding)) for m in model.modules())


def float_stand_ins(model: nn.Module) -> tuple[nn.Module, dict[str, tuple[str, nn.Module]]]:
    """A copy of ``model`` with export-friendly stand-ins, and ``{module name: (kind, quantized layer)}``."""
    copy = _copy_without_marker(model)
    plan: dict[str, tuple[str, nn.Module]] = {}
    for name, module in list(copy.named_modules()):
        if isinstance(module, Int8Embedding):
            replace_module(copy, name, _EmbeddingStandIn(module))
        elif type(module) in KIND_OF:
            _check_exportable(name, module)
            plan[name] = (KIND_OF[type(module)], module)
            replace_module(copy, name, _LinearStandIn(module))
        elif isinstance(module, (_Int8Linear, Int4WeightOnlyLinear)):
            kind = type(module).__name__
            raise ExportError(f"Quantized layer {name} ({kind}) has no ONNX export; upgrade hf-compress.")
    return copy.eval(), plan


def _check_exportable(name: str, layer: nn.Module) -> None:
    bs = getattr(layer, "group_size", 16)
    if isinstance(layer, Int4WeightOnlyLinear) and (bs < 16 or bs & (bs - 1)):
        raise ExportError(f"Layer {name} uses int4 group_size={bs}; ONNX Runtime's MatMulNBits needs a power of two "
                          ">= 16: re-quantize with group_size=32, 64 or 128.")  # fmt: skip


def _copy_without_marker(model: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(model)
    if MARKER in clone._buffers:
        del clone._buffers[MARKER]
    return clone


def rewrite_quantized(proto, plan: dict[str, tuple[str, nn.Module]], dynamic: DynamicActivations = "torch"):
    """Replace each planned layer's float MatMul / Gemm in ``proto`` (an onnx ModelProto) by its integer form.

    dynamic: how ``int8_dynamic`` layers quantize activations per call: ``"torch"`` exactly as fbgemm does (7-bit
    range, so ORT reproduces the PyTorch model and never saturates on AVX2 without VNNI), ``"ort"`` with ORT's
    fused DynamicQuantizeLinear (8-bit range: a little faster, a little different from the PyTorch model).
    """
    from onnx import helper

    graph = proto.graph
    inits = {init.name: init for init in graph.initializer}
    by_suffix = {}
    for name in plan:
        matches = [i for i in inits if i == f"{name}.{STAND_IN_BUFFER}" or i.endswith(f".{name}.{STAND_IN_BUFFER}")]
        if len(matches) != 1:
            raise ExportError(f"Could not find quantized layer {name} in the exported graph; please report this bug.")
        by_suffix[matches[0]] = name
    new_nodes, new_inits, done = [], [], set()
    for node in graph.node:
        weight = node.input[1] if len(node.input) > 1 else None
        if node.op_type not in ("MatMul", "Gemm") or weight not in by_suffix:
            new_nodes.append(node)
            continue
        name = by_suffix[weight]
        kind, layer = plan[name]
        if node.op_type == "Gemm":
            attrs = {a.name: a for a in node.attribute}
            if any(attrs[k].i for k in ("transA", "transB") if k in attrs) or any(
                attrs[k].f != 1.0 for k in ("alpha", "beta") if k in attrs
            ):
                raise ExportError(f"Layer {name} exported as a transposed or scaled Gemm, which the int8 rewrite "
                                  "does not handle; please report this bug.")  # fmt: skip
        out = node.output[0] if node.op_type == "MatMul" or len(node.input) < 3 else f"{name}/matmul_out"
        nodes, initializers = _integer_nodes(kind, layer, name, node.input[0], out, dynamic)
        new_nodes += nodes
        new_inits += initializers
        if out != node.output[0]:  # Gemm with bias: keep the float bias add
            new_nodes.append(helper.make_node("Add", [out, node.input[2]], [node.output[0]], name=f"{name}/bias"))
        done.add(weight)
    missing = set(by_suffix) - done
    if missing:
        names = sorted(by_suffix[m] for m in missing)
        raise ExportError(f"Quantized layers {names} were not found as MatMul nodes in the exported graph; please "
                          "report this bug.")  # fmt: skip
    kept = [i for i in graph.initializer if i.name not in done]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return proto


def _int8_weight(layer: _Int8Linear) -> np.ndarray:
    """(in, out) int8: the layout MatMulInteger / MatMul read (x @ W)."""
    return layer.weight.view(layer.out_features, layer.in_features).t().contiguous().numpy()


def _integer_nodes(kind: str, layer: nn.Module, name: str, x: str, out: str, dynamic: str = "torch"):
    from onnx import TensorProto, helper, numpy_helper

    def init(suffix: str, array: np.ndarray):
        return numpy_helper.from_array(np.ascontiguousarray(array), f"{name}.{suffix}")

    p = f"{name}/"
    if kind == "int4_weight_only":
        bs = layer.group_size
        packed = init("weight_q4", layer.weight.numpy())  # (out, groups, group // 2): MatMulNBits' blob layout
        scales = init("weight_scale", layer.weight_scale.detach().float().numpy().reshape(-1))
        node = helper.make_node("MatMulNBits", [x, packed.name, scales.name], [out], name=p + "MatMulNBits",
                                domain="com.microsoft", K=layer.in_features, N=layer.out_features, bits=4,
                                block_size=bs)  # fmt: skip
        return [node], [packed, scales]
    weight = init("weight_q", _int8_weight(layer))
    w_scale = layer.weight_scale.detach().float().numpy()
    if kind == "int8_weight_only":
        # Cast + Mul, not DequantizeLinear: ORT would fuse DQ -> MatMul into a dynamically quantized matmul,
        # while weight-only means float activations. ORT folds the constant dequantization once at load.
        scale = init("weight_scale", w_scale[None, :])
        nodes = [
            helper.make_node("Cast", [weight.name], [p + "wf"], name=p + "cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [p + "wf", scale.name], [p + "w"], name=p + "dequant"),
            helper.make_node("MatMul", [x, p + "w"], [out], name=p + "MatMul"),
        ]
        return nodes, [weight, scale]
    w_zp = init("weight_zero_point", np.zeros(layer.out_features, np.int8))
    w_scale_init = init("weight_scale", w_scale)
    if kind == "int8_dynamic" and dynamic == "ort":
        nodes = [helper.make_node("DynamicQuantizeLinear", [x], [p + "xq", p + "xs", p + "xzp"], name=p + "dql")]
        x_scale, x_zp, extra = p + "xs", p + "xzp", []
    elif kind == "int8_dynamic":  # fbgemm's per-call range: [min(x, 0), max(x, 0)] over 7 bits, as torch runs it
        zero, qmax = init("zero", np.array(0.0, np.float32)), init("qmax", np.array(127.0, np.float32))
        tiny = init("tiny", np.array(1e-8, np.float32))
        make = helper.make_node
        nodes = [
            make("ReduceMin", [x], [p + "min0"], name=p + "min0", keepdims=0),
            make("ReduceMax", [x], [p + "max0"], name=p + "max0", keepdims=0),
            make("Min", [p + "min0", zero.name], [p + "lo"], name=p + "lo"),
            make("Max", [p + "max0", zero.name], [p + "hi"], name=p + "hi"),
            make("Sub", [p + "hi", p + "lo"], [p + "span"], name=p + "span"),
            make("Div", [p + "span", qmax.name], [p + "xs0"], name=p + "xs0"),
            make("Max", [p + "xs0", tiny.name], [p + "xs"], name=p + "xs"),
            make("Div", [p + "lo", p + "xs"], [p + "zpn"], name=p + "zpn"),
            make("Neg", [p + "zpn"], [p + "zpf"], name=p + "zpf"),
            make("Round", [p + "zpf"], [p + "zpr"], name=p + "zpr"),
            make("Clip", [p + "zpr", zero.name, qmax.name], [p + "zpc"], name=p + "zpc"),
            make("Cast", [p + "zpc"], [p + "xzp"], name=p + "xzp", to=TensorProto.UINT8),
            make("QuantizeLinear", [x, p + "xs", p + "xzp"], [p + "xq"], name=p + "ql"),
        ]
        x_scale, x_zp, extra = p + "xs", p + "xzp", [zero, qmax, tiny]
    else:  # int8_static: the calibrated range, as torch uses it
        x_scale_init = init("input_scale", np.array(float(layer.input_scale), np.float32))
        x_zp_init = init("input_zero_point", np.array(int(layer.input_zero_point), np.uint8))
        nodes = [helper.make_node("QuantizeLinear", [x, x_scale_init.name, x_zp_init.name], [p + "xq"], name=p + "ql")]
        x_scale, x_zp, extra = x_scale_init.name, x_zp_init.name, [x_scale_init, x_zp_init]
    nodes += [
        helper.make_node("MatMulInteger", [p + "xq", weight.name, x_zp, w_zp.name], [p + "acc"], name=p + "mmi"),
        helper.make_node("Cast", [p + "acc"], [p + "accf"], name=p + "cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [x_scale, w_scale_init.name], [p + "scale"], name=p + "scale"),
        helper.make_node("Mul", [p + "accf", p + "scale"], [out], name=p + "rescale"),
    ]
    return nodes, [weight, w_zp, w_scale_init, *extra]
