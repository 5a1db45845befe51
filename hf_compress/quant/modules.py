"""Quantized layers. Weights are stored as integer tensors plus float scales, in the layout that is saved.

Stored layout (what `save_pretrained` writes): an int8 weight is ``(out, 1, in)`` and an int4 weight
``(out, in // group, group // 2)`` uint8 (two values per byte). These shapes deliberately differ from the
float ``(out, in)``: a checkpoint loaded by transformers *without* hf_compress fails with a size-mismatch
error instead of silently reading integers as float weights.

Kernels: `Int8DynamicLinear` and `Int8StaticLinear` run fbgemm's int8 GEMM on x86 CPUs (AVX2 / AVX-512;
``torch.ops.quantized.linear_dynamic`` and ``linear_with_input_q_dq_qweight_dq_output_fp32``), activations
in 7-bit range as fbgemm requires without VNNI. On other devices (CUDA, ARM) they fall back to dequantized
weights with a float matmul. Weight-only layers always dequantize and use the float matmul.

dtypes: the float buffers (scales, bias, smoothing) follow the model's dtype like any parameter
(``.to(torch.bfloat16)``, ``from_pretrained(dtype=...)``); the int8 kernels always run in fp32 (activations are
cast in and the result cast back to the input dtype), and `Int8Embedding` returns its scales' dtype.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


class Int8DynamicLinear(_Int8Linear):
    """int8 weights (per output channel) x int8 activations quantized per call (per tensor)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self._fbgemm_ok(x):
            return self._fallback(x)
        dtype = x.dtype
        out = torch.ops.quantized.linear_dynamic(self._smoothed(x).contiguous(), self.packed(), True)
        return out.to(dtype)


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


class Int8WeightOnlyLinear(_Int8Linear):
    """int8 weights, float compute: dequantized on the fly (small checkpoints and memory; CPU and CUDA)."""

    def forward(self, x: Tensor) -> Tensor:
        return self._fallback(x)


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


class Int8Embedding(nn.Module):
    """An embedding table in int8 with one scale per row: 4x smaller than fp32, dequantized after lookup."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("weight", torch.zeros(num_embeddings, 1, embedding_dim, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(num_embeddings))

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> Int8Embedding:
        module = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx)
        q, scale = quantize_per_channel(embedding.weight.detach().float())
        module.weight.copy_(q[:, None, :])
        module.weight_scale.copy_(scale)
        return module.to(embedding.weight.device, embedding.weight.dtype)

    def forward(self, ids: Tensor) -> Tensor:
        rows = F.embedding(ids, self.weight.view(self.num_embeddings, self.embedding_dim))
        scale = self.weight_scale[ids].unsqueeze(-1)
        return (rows.float() * scale.float()).to(scale.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


LINEAR_KINDS: dict[str, type[nn.Module]] = {
    "int8_dynamic": Int8DynamicLinear,
    "int8_static": Int8StaticLinear,
    "int8_weight_only": Int8WeightOnlyLinear,
    "int4_weight_only": Int4WeightOnlyLinear,
}
