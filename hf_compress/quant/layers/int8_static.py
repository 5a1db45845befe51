"""``int8_static``: int8 weights x int8 activations with a calibrated (fixed) per-tensor range, 7-bit for fbgemm
(``torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32``). Needs calibration data.

Stored beside the int8 weight: ``input_scale`` (a float scalar) and ``input_zero_point`` (an int32 scalar).
ONNX: QuantizeLinear(calibrated scale, zero point) -> MatMulInteger -> Cast -> Mul, as torch uses the range.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..kinds import Calibration, ExpectedTensors, OnnxSite, register_quantized_kind
from .int8 import QMAX, _Int8Linear, expected_tensors, int8_kind, matmul_integer

NAME = "int8_static"


class Int8StaticLinear(_Int8Linear):
    """int8 weights x int8 activations with a calibrated (fixed) per-tensor range, 7-bit for fbgemm."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, smooth: bool = False) -> None:
        super().__init__(in_features, out_features, bias, smooth)
        self.register_buffer("input_scale", torch.ones(()))
        self.register_buffer("input_zero_point", torch.zeros((), dtype=torch.int32))

    def set_input_range(self, low: float, high: float) -> None:
        """Asymmetric 7-bit quantization of the (smoothed) input over [low, high] (0 always representable)."""
        low, high = min(low, 0.0), max(high, 0.0)
        scale = max(high - low, 1e-8) / QMAX
        self.input_scale.fill_(scale)
        self.input_zero_point.fill_(int(round(-low / scale)))

    def forward(self, x: Tensor) -> Tensor:
        if not self._fbgemm_ok(x):
            return self._fallback(x)
        dtype = x.dtype
        out = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            self._smoothed(x).contiguous(), float(self.input_scale), int(self.input_zero_point), self.packed()
        )
        return out.to(dtype)


def from_float(linear: nn.Linear, config: Any, calibration: Calibration) -> Int8StaticLinear:
    module = Int8StaticLinear.from_float(linear, calibration.smooth)
    module.set_input_range(*calibration.input_range)
    return module


def static_tensors(description: Mapping[str, Any]) -> ExpectedTensors:
    return expected_tensors(description, {"input_scale": ((), None), "input_zero_point": ((), torch.int32)})


def to_onnx(layer: Int8StaticLinear, site: OnnxSite) -> tuple[list, list]:
    from onnx import helper

    x_scale = site.initializer("input_scale", np.array(float(layer.input_scale), np.float32))
    x_zp = site.initializer("input_zero_point", np.array(int(layer.input_zero_point), np.uint8))
    quantize = [helper.make_node("QuantizeLinear", [site.x, x_scale.name, x_zp.name], [site.prefix + "xq"],
                                 name=site.prefix + "ql")]  # fmt: skip
    nodes, initializers = matmul_integer(layer, site, site.prefix + "xq", x_scale.name, x_zp.name)
    return quantize + nodes, initializers + [x_scale, x_zp]


register_quantized_kind(
    int8_kind(
        NAME,
        Int8StaticLinear,
        help="int8 weights and activations, the activation ranges calibrated ahead of time (needs calibration data)",
        from_float=from_float,
        expected_tensors=static_tensors,
        quantizes_activations=True,
        needs_input_ranges=True,
        onnx=to_onnx,
    )
)
