"""``int8_weight_only``: int8 weights, float compute (dequantized on the fly): small checkpoints and memory, on CPU
and CUDA alike.

ONNX: Cast(int8 weight) * per-channel scale -> MatMul (float activations, as in torch). Not DequantizeLinear: ORT
would fuse DQ -> MatMul into a dynamically quantized matmul, while weight-only means float activations; ORT folds
the constant dequantization once at load.
"""

from __future__ import annotations

from torch import Tensor

from ..kinds import OnnxSite, register_quantized_kind
from .int8 import _Int8Linear, int8_kind, int8_weight

NAME = "int8_weight_only"


class Int8WeightOnlyLinear(_Int8Linear):
    """int8 weights, float compute: dequantized on the fly (small checkpoints and memory; CPU and CUDA)."""

    def forward(self, x: Tensor) -> Tensor:
        return self._fallback(x)


def to_onnx(layer: Int8WeightOnlyLinear, site: OnnxSite) -> tuple[list, list]:
    from onnx import TensorProto, helper

    p = site.prefix
    weight = site.initializer("weight_q", int8_weight(layer))
    scale = site.initializer("weight_scale", layer.weight_scale.detach().float().numpy()[None, :])
    nodes = [
        helper.make_node("Cast", [weight.name], [p + "wf"], name=p + "cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [p + "wf", scale.name], [p + "w"], name=p + "dequant"),
        helper.make_node("MatMul", [site.x, p + "w"], [site.out], name=p + "MatMul"),
    ]
    return nodes, [weight, scale]


register_quantized_kind(
    int8_kind(
        NAME,
        Int8WeightOnlyLinear,
        help="int8 per-output-channel weights, float compute in the activation dtype (CPU and CUDA)",
        onnx=to_onnx,
    )
)
