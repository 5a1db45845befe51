"""Structured pruning while distilling (HomoDistil), its importance scorers, physical slicing, and the pruning
baselines."""

from .config import HomoDistilConfig
from .masks import StructureMasks
from .scorers import ImportanceScorer, get_scorer, register_scorer, scorer_names
from .slicing import slice_model
from .trainer import HomoDistilTrainer

__all__ = [
    "HomoDistilConfig",
    "HomoDistilTrainer",
    "ImportanceScorer",
    "StructureMasks",
    "get_scorer",
    "register_scorer",
    "scorer_names",
    "slice_model",
]
