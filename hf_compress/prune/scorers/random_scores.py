"""``random``: a control, not a ranking. Scores are drawn once per run from the training seed (``args.seed``) and
kept, so the schedule removes the structures in one fixed random order and keeps a uniformly random set of each
kind. What any ranking adds over it is what the choice of the kept set is worth."""

from __future__ import annotations

import torch
from torch import Tensor

from ..masks import StructureMasks
from .base import EventScorer
from .registry import KINDS, check_state, register_scorer


class RandomScores(EventScorer):
    """Uniform random scores in the shapes of ``masks``, drawn from ``seed`` (hidden, then heads, then FFN) and the
    same at every pruning event."""

    name = "random"

    def __init__(self, masks: StructureMasks, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.fixed = {kind: torch.rand(getattr(masks, kind).shape, generator=generator) for kind in KINDS}

    def structure_scores(self, structure=None) -> dict[str, Tensor]:
        return {kind: score.clone() for kind, score in self.fixed.items()}

    def state_dict(self) -> dict[str, Tensor]:
        return {f"fixed.{kind}": score for kind, score in self.fixed.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        check_state(self.name, state, {f"fixed.{kind}" for kind in KINDS})
        for kind in KINDS:
            saved = state[f"fixed.{kind}"]
            if saved.shape != self.fixed[kind].shape:
                raise ValueError(
                    f"Saved random {kind} scores have shape {tuple(saved.shape)}, this model's "
                    f"{tuple(self.fixed[kind].shape)}."
                )
            self.fixed[kind] = saved.float().cpu()


register_scorer(
    "random",
    lambda pruner, trainer: RandomScores(pruner.masks, pruner.args.seed),
    help="a seeded random kept set (a control: what a ranking adds over chance)",
    needs_steps=False,
)
