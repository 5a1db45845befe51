"""What the int8 Linear kinds (dynamic, static, weight-only) share: the stored layout, per-channel quantization,
the fbgemm weight packing, the saved description and its checks, and the int8 ONNX MatMul.

Stored layout (what `save_pretrained` writes): the int8 weight is ``(out, 1, in)``, its scale ``(out,)``, with an
optional float bias ``(out,)`` and SmoothQuant divisor ``input_smooth`` ``(in,)``. The weight's shape deliberately
differs from the float ``(out, in)``: a checkpoint loaded by transformers *without* hf_compress fails with a
size-mismatch error instead of silently reading integers as float weights.

Kernels: the dynamic and static layers run fbgemm's int8 GEMM on x86 CPUs (AVX2 / AVX-512), activations in 7-bit
range as fbgemm requires without VNNI. On other devices (CUDA, ARM) they fall back to dequantized weights with a
float matmul. The float buffers (scales, bias, smoothing) follow the model's dtype like any parameter
(``.to(torch.bfloat16)``, ``from_pretrained(dtype=...)``); the int8 kernels always run in fp32 (activations are
cast in and the result cast back to the input dtype).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kinds import Calibration, ExpectedTensors, OnnxSite, QuantizedKind
from ..validation import check_linear_description, flag_field

QMAX = 127


def quantize_per_channel(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per output channel. weight: (out, in) -> (int8 (out, in), scale (out,))."""
    scale = weight.abs().amax(dim=1).clamp_min(1e-8) / QMAX
    return (weight / scale[:, None]).round().clamp(-QMAX, QMAX).to(torch.int8), scale.float()


def _reset_after_load(module: nn.Module, incompatible_keys) -> None:
    """load_state_dict post-hook (module level so quantized models can be pickled): drop the packed cache."""
    module._reset()


class _Int8Linear(nn.Module):
    """Shared storage of the int8 linear layers: weight (out, 1, in) int8, weight_scale (out,), bias."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, smooth: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, 1, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        # SmoothQuant: x / input_smooth is what the (pre-multiplied) weight expects.
        self.register_buffer("input_smooth", torch.ones(in_features) if smooth else None)
        self._packed = None
        self._packed_key = None
        self.register_load_state_dict_post_hook(_reset_after_load)

    def _reset(self) -> None:
        self._packed, self._packed_key = None, None

    def __getstate__(self) -> dict:
        # pickle / torch.save(model) / deepcopy: the fbgemm-packed weight is a cache, rebuilt on first use.
        state = super().__getstate__()
        state.update(_packed=None, _packed_key=None)
        return state

    @classmethod
    def from_float(cls, linear: nn.Linear, smooth: Tensor | None = None, **kwargs) -> _Int8Linear:
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, smooth is not None, **kwargs)
        weight = linear.weight.detach().float()
        if smooth is not None:  # rounded to the layer's dtype first: the stored divisor is exactly what scaled W
            smooth = smooth.to(linear.weight.dtype).float()
            weight = weight * smooth[None, :]
            module.input_smooth.copy_(smooth)
        q, scale = quantize_per_channel(weight)
        module.weight.copy_(q[:, None, :])
        module.weight_scale.copy_(scale)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach().float())
        return module.to(linear.weight.device, linear.weight.dtype)

    def dequantized_weight(self) -> Tensor:
        return self.weight.view(self.out_features, self.in_features).float() * self.weight_scale.float()[:, None]

    def _fbgemm_ok(self, x: Tensor) -> bool:
        return x.device.type == "cpu" and "fbgemm" in torch.backends.quantized.supported_engines

    def packed(self):
        key = (
            self.weight.data_ptr(),
            self.weight_scale.data_ptr(),
            self.weight.device,
            self.bias is None or self.bias.data_ptr(),
        )
        if self._packed is None or self._packed_key != key:
            with warnings.catch_warnings():  # torch deprecates quantized tensors; fbgemm's int8 GEMM still needs one
                warnings.simplefilter("ignore", UserWarning)
                q = torch._make_per_channel_quantized_tensor(
                    self.weight.view(self.out_features, self.in_features),
                    self.weight_scale.double(),
                    torch.zeros(self.out_features, dtype=torch.long),
                    0,
                )
            self._packed = torch.ops.quantized.linear_prepack(q, None if self.bias is None else self.bias.float())
            self._packed_key = key
        return self._packed

    def _smoothed(self, x: Tensor) -> Tensor:
        """The fp32 input of the int8 kernels (divided by the SmoothQuant factors when smoothed)."""
        x = x.float()
        return x if self.input_smooth is None else x / self.input_smooth.float()

    def _fallback(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        smoothed = x if self.input_smooth is None else (x.float() / self.input_smooth.float()).to(x.dtype)
        return F.linear(smoothed, self.dequantized_weight().to(x.dtype), bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, smooth={self.input_smooth is not None}"
        )


# ------------------------------------------------------------------------------------ registration (shared parts)
def describe(module: _Int8Linear) -> dict[str, Any]:
    return {"in_features": module.in_features, "out_features": module.out_features, "bias": module.bias is not None,
            "smooth": module.input_smooth is not None}  # fmt: skip


def check_description(name: str, description: Mapping[str, Any]) -> None:
    check_linear_description(name, description)
    flag_field(description, "smooth", name, required=False)


def expected_tensors(description: Mapping[str, Any], extra: ExpectedTensors | None = None) -> ExpectedTensors:
    """weight, weight_scale, input_smooth when smoothed, then ``extra`` (a kind's own tensors), then bias."""
    out, inp = description["out_features"], description["in_features"]
    expected: ExpectedTensors = {"weight": ((out, 1, inp), torch.int8), "weight_scale": ((out,), None)}
    if description.get("smooth", False):
        expected["input_smooth"] = ((inp,), None)
    expected.update(extra or {})
    if description["bias"]:
        expected["bias"] = ((out,), None)
    return expected


def int8_kind(name: str, cls: type[_Int8Linear], help: str, **fields: Any) -> QuantizedKind:
    """The `QuantizedKind` of an int8 Linear layer ``cls``; ``fields`` override or add spec fields (onnx, ...)."""

    def from_float(linear: nn.Linear, config: Any, calibration: Calibration) -> _Int8Linear:
        return cls.from_float(linear, calibration.smooth)

    def build(description: Mapping[str, Any]) -> _Int8Linear:
        return cls(description["in_features"], description["out_features"], description["bias"],
                   description.get("smooth", False))  # fmt: skip

    values = dict(from_float=from_float, describe=describe, build=build, check_description=check_description,
                  expected_tensors=expected_tensors, help=help)  # fmt: skip
    return QuantizedKind(name=name, module_cls=cls, **{**values, **fields})


# --------------------------------------------------------------------------------------------------------- ONNX
def int8_weight(layer: _Int8Linear) -> np.ndarray:
    """(in, out) int8: the layout MatMulInteger / MatMul read (x @ W)."""
    return layer.weight.view(layer.out_features, layer.in_features).t().contiguous().numpy()


def matmul_integer(layer: _Int8Linear, site: OnnxSite, x_q: str, x_scale: str, x_zp: str) -> tuple[list, list]:
    """MatMulInteger of the quantized input ``x_q`` (scale ``x_scale``, zero point ``x_zp``) with the checkpoint's
    int8 weight -> Cast -> Mul(x_scale * w_scale) into ``site.out``."""
    from onnx import TensorProto, helper

    p = site.prefix
    weight = site.initializer("weight_q", int8_weight(layer))
    w_zp = site.initializer("weight_zero_point", np.zeros(layer.out_features, np.int8))
    w_scale = site.initializer("weight_scale", layer.weight_scale.detach().float().numpy())
    nodes = [
        helper.make_node("MatMulInteger", [x_q, weight.name, x_zp, w_zp.name], [p + "acc"], name=p + "mmi"),
        helper.make_node("Cast", [p + "acc"], [p + "accf"], name=p + "cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [x_scale, w_scale.name], [p + "scale"], name=p + "scale"),
        helper.make_node("Mul", [p + "accf", p + "scale"], [site.out], name=p + "rescale"),
    ]
    return nodes, [weight, w_zp, w_scale]
