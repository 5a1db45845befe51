"""The quantized layer classes under one import path. Each is defined, and registered as a kind, in its own module
of ``quant/layers/`` (the stored layouts and kernels are described there); the rest of hf_compress finds them
through the registry (`kinds.get_quantized_kind`, `kinds.kind_of_module`), not through this list."""

from .layers.int4_weight_only import Int4WeightOnlyLinear
from .layers.int8 import QMAX, _Int8Linear, quantize_per_channel
from .layers.int8_dynamic import Int8DynamicLinear
from .layers.int8_embedding import Int8Embedding
from .layers.int8_static import Int8StaticLinear
from .layers.int8_weight_only import Int8WeightOnlyLinear

__all__ = [
    "QMAX",
    "Int4WeightOnlyLinear",
    "Int8DynamicLinear",
    "Int8Embedding",
    "Int8StaticLinear",
    "Int8WeightOnlyLinear",
    "_Int8Linear",
    "quantize_per_channel",
]
