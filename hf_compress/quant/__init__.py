"""Post-training quantization (int8 dynamic / static, int8 / int4 weight-only, int8 embeddings) that saves
with `save_pretrained` and loads back through `from_pretrained` after ``import hf_compress``.

Each quantized layer kind is one module of ``layers/`` that registers a `kinds.QuantizedKind` at import."""

from .apply import quantize, sensitivity_report
from .config import QuantizationConfig
from .kinds import (
    QuantizedKind,
    UnknownQuantizedKindError,
    get_quantized_kind,
    quantized_kind_names,
    register_quantized_kind,
    registered_quantized_kind,
    unregister_quantized_kind,
)
from .layers import int4_weight_only, int8_dynamic, int8_embedding, int8_static, int8_weight_only  # noqa: F401
from .serialization import HfCompressQuantizationConfig, HfCompressQuantizer

__all__ = [
    "HfCompressQuantizationConfig",
    "HfCompressQuantizer",
    "QuantizationConfig",
    "QuantizedKind",
    "UnknownQuantizedKindError",
    "get_quantized_kind",
    "quantize",
    "quantized_kind_names",
    "register_quantized_kind",
    "registered_quantized_kind",
    "sensitivity_report",
    "unregister_quantized_kind",
]
