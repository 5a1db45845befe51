"""hf_compress: distillation, structured pruning and quantization for Hugging Face BERT and ViT models."""

from .distill import DistillationConfig, DistillationTrainer, make_student
from .models.rnn import RNNStudentConfig, RNNStudentForSequenceClassification, rnn_student_from_teacher
from .prune import HomoDistilConfig, HomoDistilTrainer, slice_model
from .quant import QuantizationConfig, quantize, sensitivity_report

__version__ = "0.1.0"

__all__ = [
    "DistillationConfig",
    "DistillationTrainer",
    "HomoDistilConfig",
    "HomoDistilTrainer",
    "QuantizationConfig",
    "make_student",
    "rnn_student_from_teacher",
    "RNNStudentConfig",
    "RNNStudentForSequenceClassification",
    "quantize",
    "sensitivity_report",
    "slice_model",
    "__version__",
]
