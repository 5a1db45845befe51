"""hf_compress: distillation, structured pruning and quantization for Hugging Face BERT and ViT models."""

from .distill import DistillationConfig, DistillationTrainer, make_student

__version__ = "0.1.0"

__all__ = ["DistillationConfig", "DistillationTrainer", "make_student", "__version__"]
