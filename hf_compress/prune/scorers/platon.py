"""``platon`` (the default): PLATON's smoothed sensitivity times its uncertainty (Zhang et al. 2022), per weight or,
with ``importance_granularity="structure"``, per structure (HomoDistil's column score). The maths is in
``prune/scores.py``."""

from __future__ import annotations

from ..scores import ImportanceScores, StructureImportance
from .registry import register_scorer


def smoothed_scores(pruner, kind: str) -> ImportanceScores | StructureImportance:
    """PLATON-style scores of ``kind`` ("platon" or "taylor") with the config's EMA factors, ΔT and granularity."""
    args = pruner.args
    smoothing = (args.importance_beta1, args.importance_beta2, args.importance_window)
    if args.importance_granularity == "structure":
        return StructureImportance(pruner.model, pruner.structure, kind, *smoothing)
    return ImportanceScores(pruner.model, kind, *smoothing)


register_scorer(
    "platon",
    lambda pruner, trainer: smoothed_scores(pruner, "platon"),
    help="smoothed sensitivity |w * grad| times its uncertainty (PLATON); the default",
    structure_granularity=True,
)
