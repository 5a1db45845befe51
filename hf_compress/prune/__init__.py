"""Structured pruning while distilling (HomoDistil), physical slicing, and the pruning baselines."""

from .config import HomoDistilConfig
from .masks import StructureMasks
from .slicing import slice_model
from .trainer import HomoDistilTrainer

__all__ = ["HomoDistilConfig", "HomoDistilTrainer", "StructureMasks", "slice_model"]
