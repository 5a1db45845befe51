"""``embedding``: an embedding table in int8 with one scale per row (4x smaller than fp32), dequantized after the
lookup. Not a method: `QuantizationConfig.quantize_embeddings` switches it on for every embedding that the
include / exclude globs leave (not one tied to a masked-LM output projection).

Stored layout: the table is ``(rows, 1, dim)`` int8 and its scale ``(rows,)``; the float parts follow the model's
dtype, and the lookup returns the scales' dtype. ONNX: an int8 Gather, a Cast and a Mul (exported as is).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kinds import Calibration, ExpectedTensors, FloatModule, QuantizedKind, register_quantized_kind
from ..validation import positive_int_field
from .int8 import quantize_per_channel

NAME = "embedding"


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


class EmbeddingStandIn(nn.Module):
    """int8 table (rows, dim) and a scale per row: an int8 Gather, a Cast and a Mul in ONNX."""

    def __init__(self, layer: Int8Embedding) -> None:
        super().__init__()
        self.register_buffer("weight_q", layer.weight.view(layer.num_embeddings, layer.embedding_dim).clone())
        self.register_buffer("weight_scale", layer.weight_scale.detach().clone())

    def forward(self, ids: Tensor) -> Tensor:
        return self.weight_q[ids].float() * self.weight_scale[ids].unsqueeze(-1)


def from_float(embedding: nn.Embedding, config: Any, calibration: Calibration) -> Int8Embedding:
    return Int8Embedding.from_float(embedding)


def describe(module: Int8Embedding) -> dict[str, Any]:
    return {"num_embeddings": module.num_embeddings, "embedding_dim": module.embedding_dim,
            "padding_idx": module.padding_idx}  # fmt: skip


def build(description: Mapping[str, Any]) -> Int8Embedding:
    return Int8Embedding(description["num_embeddings"], description["embedding_dim"], description.get("padding_idx"))


def check_description(name: str, description: Mapping[str, Any]) -> None:
    num = positive_int_field(description, "num_embeddings", name)
    positive_int_field(description, "embedding_dim", name)
    padding = description.get("padding_idx")
    if padding is not None and (
        isinstance(padding, bool) or not isinstance(padding, int) or not -num <= padding < num
    ):
        raise ValueError(f"quantization_config.modules[{name!r}].padding_idx={padding!r} is not a row index.")


def expected_tensors(description: Mapping[str, Any]) -> ExpectedTensors:
    n, d = description["num_embeddings"], description["embedding_dim"]
    return {"weight": ((n, 1, d), torch.int8), "weight_scale": ((n,), None)}


register_quantized_kind(
    QuantizedKind(
        name=NAME,
        module_cls=Int8Embedding,
        from_float=from_float,
        describe=describe,
        build=build,
        check_description=check_description,
        expected_tensors=expected_tensors,
        help="int8 embedding tables with a scale per row (quantize_embeddings)",
        replaces=FloatModule(
            nn.Embedding, ("num_embeddings", "embedding_dim"), "an embedding of {num_embeddings} x {embedding_dim}"
        ),
        method=False,
        enabled=lambda config: config.quantize_embeddings,
        onnx_stand_in=EmbeddingStandIn,
    )
)
