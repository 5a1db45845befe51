"""``int4_weight_only``: group-wise symmetric int4 weights, two per byte; float compute after on-the-fly
dequantization (the smallest checkpoints; CPU and CUDA alike).

Stored layout: the weight is ``(out, in // group, group // 2)`` uint8 (low nibble first, zero point 8), its scale
``(out, in // group)``; the shape differs from the float ``(out, in)`` so a load without hf_compress fails loudly.
ONNX: com.microsoft MatMulNBits (the same nibble packing and zero point 8), which needs a power-of-two
``group_size`` >= 16.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kinds import Calibration, ExpectedTensors, OnnxSite, QuantizedKind, register_quantized_kind
from ..validation import REPAIR, check_linear_description, positive_int_field

NAME = "int4_weight_only"


class Int4WeightOnlyLinear(nn.Module):
    """Group-wise symmetric int4 weights, two per byte; float compute after on-the-fly dequantization."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, group_size: int = 64) -> None:
        super().__init__()
        if in_features % group_size:
            raise ValueError(f"in_features={in_features} is not a multiple of group_size={group_size}.")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = in_features // group_size
        self.register_buffer("weight", torch.zeros(out_features, groups, group_size // 2, dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(out_features, groups))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_float(cls, linear: nn.Linear, group_size: int = 64) -> Int4WeightOnlyLinear:
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size)
        w = linear.weight.detach().float().view(linear.out_features, -1, group_size)
        scale = w.abs().amax(-1).clamp_min(1e-8) / 7
        q = (w / scale[..., None]).round().clamp(-8, 7).to(torch.int16) + 8  # 0..15
        module.weight.copy_((q[..., 0::2] | (q[..., 1::2] << 4)).to(torch.uint8))
        module.weight_scale.copy_(scale)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach().float())
        return module.to(linear.weight.device, linear.weight.dtype)

    def dequantized_weight(self) -> Tensor:
        packed = self.weight.to(torch.int16)
        q = torch.stack([(packed & 0xF) - 8, (packed >> 4) - 8], dim=-1).flatten(-2)  # (out, groups, group)
        return (q.float() * self.weight_scale.float()[..., None]).view(self.out_features, self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight().to(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


def check_float(name: str, linear: nn.Linear, config: Any) -> None:
    if linear.in_features % config.group_size:
        raise ValueError(
            f"{name} has {linear.in_features} input features, not a multiple of group_size={config.group_size}; "
            "choose a group_size that divides it or exclude the layer."
        )


def from_float(linear: nn.Linear, config: Any, calibration: Calibration) -> Int4WeightOnlyLinear:
    return Int4WeightOnlyLinear.from_float(linear, config.group_size)


def describe(module: Int4WeightOnlyLinear) -> dict[str, Any]:
    return {"in_features": module.in_features, "out_features": module.out_features, "bias": module.bias is not None,
            "group_size": module.group_size}  # fmt: skip


def build(description: Mapping[str, Any]) -> Int4WeightOnlyLinear:
    return Int4WeightOnlyLinear(description["in_features"], description["out_features"], description["bias"],
                                description["group_size"])  # fmt: skip


def check_description(name: str, description: Mapping[str, Any]) -> None:
    check_linear_description(name, description)
    in_features = description["in_features"]
    group = positive_int_field(description, "group_size", name)
    if group % 2 or in_features % group:
        raise ValueError(
            f"quantization_config.modules[{name!r}].group_size={group} must be even and divide "
            f"in_features={in_features}; {REPAIR}"
        )


def expected_tensors(description: Mapping[str, Any]) -> ExpectedTensors:
    out, inp, g = description["out_features"], description["in_features"], description["group_size"]
    expected: ExpectedTensors = {
        "weight": ((out, inp // g, g // 2), torch.uint8),
        "weight_scale": ((out, inp // g), None),
    }
    if description["bias"]:
        expected["bias"] = ((out,), None)
    return expected


def check_export(name: str, layer: Int4WeightOnlyLinear) -> None:
    bs = layer.group_size
    if bs < 16 or bs & (bs - 1):
        raise ValueError(f"Layer {name} uses int4 group_size={bs}; ONNX Runtime's MatMulNBits needs a power of two "
                         ">= 16: re-quantize with group_size=32, 64 or 128.")  # fmt: skip


def to_onnx(layer: Int4WeightOnlyLinear, site: OnnxSite) -> tuple[list, list]:
    from onnx import helper

    packed = site.initializer("weight_q4", layer.weight.numpy())  # (out, groups, group // 2): MatMulNBits' blob layout
    scales = site.initializer("weight_scale", layer.weight_scale.detach().float().numpy().reshape(-1))
    node = helper.make_node("MatMulNBits", [site.x, packed.name, scales.name], [site.out],
                            name=site.prefix + "MatMulNBits", domain="com.microsoft", K=layer.in_features,
                            N=layer.out_features, bits=4, block_size=layer.group_size)  # fmt: skip
    return [node], [packed, scales]


register_quantized_kind(
    QuantizedKind(
        name=NAME,
        module_cls=Int4WeightOnlyLinear,
        from_float=from_float,
        describe=describe,
        build=build,
        check_description=check_description,
        expected_tensors=expected_tensors,
        help="group-wise int4 weights, two per byte, float compute (the smallest checkpoints; CPU and CUDA)",
        check_float=check_float,
        onnx=to_onnx,
        check_export=check_export,
    )
)
