"""hf_compress: distillation, structured pruning and quantization for Hugging Face BERT and ViT models."""

from .distill import DistillationConfig, DistillationTrainer, make_student
from .prune import HomoDistilConfig, HomoDistilTrainer, slice_model

__version__ = "0.1.0"

__all__ = [
    "DistillationConfig",
    "DistillationTrainer",
    "HomoDistilConfig",
    "HomoDistilTrainer",
    "make_student",
    "slice_model",
    "__version__",
]
