"""Post-training quantization (int8 dynamic / static, int8 / int4 weight-only, int8 embeddings) that saves
with `save_pretrained` and loads back through `from_pretrained` after ``import hf_compress``."""

from .apply import quantize, sensitivity_report
from .config import QuantizationConfig
from .serialization import HfCompressQuantizationConfig, HfCompressQuantizer

__all__ = [
    "HfCompressQuantizationConfig",
    "HfCompressQuantizer",
    "QuantizationConfig",
    "quantize",
    "sensitivity_report",
]
