"""Quantized checkpoints to int8 ONNX carrying the same decisions as the PyTorch model.

No exporter understands hf_compress's quantized layers (they call fbgemm kernels), so the export is two steps:

1. `float_stand_ins` swaps every quantized layer for its kind's stand-in (`QuantizedKind.onnx_stand_in`); by
   default one that computes ``x @ weight_t + bias`` with the *dequantized* weight held in a buffer named
   ``weight_t`` (the initializer that the MatMul reads, so the layer is found by name in the graph). A kind whose
   stand-in exports as is (int8 embeddings: an int8 Gather + per-row scale) needs no second step.
2. `rewrite_quantized` replaces each such MatMul (or Gemm) with the integer subgraph of its kind
   (`QuantizedKind.onnx`, described in each kind's module under ``quant/layers/``), built from the checkpoint's
   own integer weights and scales (never re-quantized).

A layer whose kind has no ONNX lowering is refused, naming the kind. Layers kept in fp32 are not touched;
SmoothQuant's ``x / smooth`` stays a float Div in front of the layer. The weights and their scales are
bit-identical to the checkpoint's.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ..quant.kinds import OnnxSite, QuantizedKind, get_quantized_kind, is_quantized_module, kind_of_module
from ..quant.kinds import quantized_kind_names as _kind_names
from ..quant.serialization import MARKER, replace_module

DynamicActivations = Literal["torch", "ort"]
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


def is_quantized(model: nn.Module) -> bool:
    return any(is_quantized_module(m) for m in model.modules())


def _exportable_kinds() -> list[str]:
    return [name for name in _kind_names() if get_quantized_kind(name).exports]


def _stand_in(name: str, module: nn.Module) -> tuple[QuantizedKind | None, nn.Module | None]:
    """(its kind, the module torch.onnx.export sees instead) for a quantized layer; (None, None) for any other."""
    kind = kind_of_module(module)
    if kind is None:
        if is_quantized_module(module):  # a subclass of a quantized layer: it may compute differently
            raise ExportError(f"Quantized layer {name} ({type(module).__name__}) has no ONNX export; register it as "
                              "its own quantized kind, or upgrade hf-compress.")  # fmt: skip
        return None, None
    if not kind.exports:
        raise ExportError(f"Quantized layer {name} is of kind {kind.name!r} ({type(module).__name__}), which has no "
                          f"ONNX lowering; quantize with a kind that exports ({_exportable_kinds()}) or export the "
                          "float model.")  # fmt: skip
    if kind.check_export is not None:
        try:
            kind.check_export(name, module)
        except ValueError as err:
            raise ExportError(str(err)) from err
    stand_in = kind.onnx_stand_in(module) if kind.onnx_stand_in is not None else _LinearStandIn(module)
    return kind, stand_in


def float_stand_ins(model: nn.Module) -> tuple[nn.Module, dict[str, tuple[str, nn.Module]]]:
    """A copy of ``model`` with export-friendly stand-ins, and ``{module name: (kind, quantized layer)}`` for the
    layers whose stand-in `rewrite_quantized` turns into integer nodes."""
    copy = _copy_without_marker(model)
    plan: dict[str, tuple[str, nn.Module]] = {}
    for name, module in list(copy.named_modules()):
        kind, stand_in = _stand_in(name, module)
        if kind is None:
            continue
        if kind.onnx is not None:
            plan[name] = (kind.name, module)
        replace_module(copy, name, stand_in)
    return copy.eval(), plan


def _copy_without_marker(model: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(model)
    if MARKER in clone._buffers:
        del clone._buffers[MARKER]
    return clone


def rewrite_quantized(
    proto, plan: dict[str, tuple[str, nn.Module]], dynamic: DynamicActivations = "torch", skip_unused: bool = False
):
    """Replace each planned layer's float MatMul / Gemm in ``proto`` (an onnx ModelProto) by its integer form.

    dynamic: how layers that quantize activations per call (``int8_dynamic``) do it in ONNX (`OnnxSite`):
    ``"torch"`` exactly as fbgemm does (7-bit range, so ORT reproduces the PyTorch model and never saturates on AVX2
    without VNNI), ``"ort"`` with ORT's fused DynamicQuantizeLinear (8-bit range: a little faster, a little
    different from the PyTorch model).
    skip_unused: a planned layer absent from the graph is left out of ``plan`` (removed from it) instead of an error:
    the graph's outputs do not use it (an embedder's graph has no pooler).
    """
    from onnx import helper

    graph = proto.graph
    inits = {init.name: init for init in graph.initializer}
    by_suffix = {}
    for name in list(plan):
        matches = [i for i in inits if i == f"{name}.{STAND_IN_BUFFER}" or i.endswith(f".{name}.{STAND_IN_BUFFER}")]
        if not matches and skip_unused:
            del plan[name]
            continue
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
        site = OnnxSite(name=name, x=node.input[0], out=out, dynamic_activations=dynamic)
        nodes, initializers = get_quantized_kind(kind).onnx(layer, site)
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
