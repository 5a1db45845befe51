"""``int8_dynamic``: int8 weights (per output channel) x int8 activations quantized per call (per tensor), on
fbgemm's int8 GEMM (``torch.ops.quantized.linear_dynamic``).

ONNX: a per-call 7-bit QuantizeLinear with fbgemm's range rule -> MatMulInteger -> Cast -> Mul(x_scale * w_scale),
or with ``dynamic_activations="ort"`` ORT's own DynamicQuantizeLinear (8 bits, the quantize_dynamic pattern, fused
into DynamicQuantizeMatMul at load).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..kinds import OnnxSite, register_quantized_kind
from .int8 import QMAX, _Int8Linear, int8_kind, matmul_integer

NAME = "int8_dynamic"


class Int8DynamicLinear(_Int8Linear):
    """int8 weights (per output channel) x int8 activations quantized per call (per tensor)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self._fbgemm_ok(x):
            return self._fallback(x)
        dtype = x.dtype
        out = torch.ops.quantized.linear_dynamic(self._smoothed(x).contiguous(), self.packed(), True)
        return out.to(dtype)


def _fbgemm_range_nodes(site: OnnxSite) -> tuple[list, list]:
    """fbgemm's per-call range: [min(x, 0), max(x, 0)] over 7 bits, as torch runs it; quantizes x into ``/xq``."""
    from onnx import TensorProto
    from onnx.helper import make_node as make

    p, x = site.prefix, site.x
    zero = site.initializer("zero", np.array(0.0, np.float32))
    qmax = site.initializer("qmax", np.array(float(QMAX), np.float32))
    tiny = site.initializer("tiny", np.array(1e-8, np.float32))
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
    return nodes, [zero, qmax, tiny]


def to_onnx(layer: Int8DynamicLinear, site: OnnxSite) -> tuple[list, list]:
    from onnx import helper

    p = site.prefix
    if site.dynamic_activations == "ort":
        quantize = [
            helper.make_node("DynamicQuantizeLinear", [site.x], [p + "xq", p + "xs", p + "xzp"], name=p + "dql")
        ]
        extra = []
    else:
        quantize, extra = _fbgemm_range_nodes(site)
    nodes, initializers = matmul_integer(layer, site, p + "xq", p + "xs", p + "xzp")
    return quantize + nodes, initializers + extra


register_quantized_kind(
    int8_kind(
        NAME,
        Int8DynamicLinear,
        help="int8 per-output-channel weights, int8 activations quantized per call (fbgemm kernel on x86 CPUs)",
        quantizes_activations=True,
        onnx=to_onnx,
    )
)
