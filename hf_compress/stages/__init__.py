"""Recipe stage types, one module each, registered at import (`registry.register_stage`)."""

from . import distill, evaluate, finetune, homodistil, quantize, sparsify  # noqa: F401  (each registers its stage)
from .registry import StageSpec, UnknownStageError, get_stage, register_stage, stage_names

__all__ = ["StageSpec", "UnknownStageError", "get_stage", "register_stage", "stage_names"]
