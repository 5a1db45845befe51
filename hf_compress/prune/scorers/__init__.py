"""Importance scorers of HomoDistil's structured pruning, one module each, registered at import
(`registry.register_scorer`); ``HomoDistilConfig(importance=name)`` picks one.

Add one: a class following `ImportanceScorer` and one call,
``register_scorer("mine", lambda pruner, trainer: MyScores(pruner), needs_steps=...)``, before the config is built.
"""

from . import activation, fisher, magnitude, platon, random_scores, taylor  # noqa: F401  (each registers its scorer)
from .base import EventScorer
from .registry import (
    KINDS,
    ImportanceScorer,
    ScorerSpec,
    UnknownScorerError,
    get_scorer,
    register_scorer,
    scorer_names,
)

__all__ = [
    "KINDS",
    "EventScorer",
    "ImportanceScorer",
    "ScorerSpec",
    "UnknownScorerError",
    "get_scorer",
    "register_scorer",
    "scorer_names",
]
