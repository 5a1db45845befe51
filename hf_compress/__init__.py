"""hf_compress: distillation, structured pruning, sparsity and quantization for Hugging Face BERT and ViT models."""

from ._version import __version__
from .distill import DistillationConfig, DistillationTrainer, make_deit_student, make_student
from .export import export_onnx
from .models.rnn import RNNStudentConfig, RNNStudentForSequenceClassification, rnn_student_from_teacher
from .prune import HomoDistilConfig, HomoDistilTrainer, slice_model
from .quant import QuantizationConfig, quantize, sensitivity_report
from .sparsity import SparsifyConfig, SparsifyTrainer

__all__ = [
    "DistillationConfig",
    "DistillationTrainer",
    "HomoDistilConfig",
    "HomoDistilTrainer",
    "QuantizationConfig",
    "RNNStudentConfig",
    "RNNStudentForSequenceClassification",
    "SparsifyConfig",
    "SparsifyTrainer",
    "export_onnx",
    "make_deit_student",
    "make_student",
    "quantize",
    "rnn_student_from_teacher",
    "sensitivity_report",
    "slice_model",
    "__version__",
]
