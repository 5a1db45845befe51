"""Export compressed models for deployment (ONNX / ONNX Runtime). Needs the ``onnx`` extra, imported lazily."""

from .onnx import ExportReport, export_onnx
from .quantized import ExportError

__all__ = ["ExportError", "ExportReport", "export_onnx"]
