"""``magnitude``: a structure scores the sum of ``|w|`` over the weights it owns (no gradients, so it can rank the
untrained student and prune one-shot at step 0)."""

from __future__ import annotations

from torch import Tensor, nn

from ...models.structure import ModelStructure
from ..scores import structure_scores
from .base import EventScorer
from .registry import register_scorer


class MagnitudeScores(EventScorer):
    """``|w|`` of every trainable parameter of ``model``, summed per structure by `scores.structure_scores`."""

    name = "magnitude"

    def __init__(self, model: nn.Module) -> None:
        self._scored = {id(p) for p in model.parameters() if p.requires_grad}

    def of(self, module: nn.Module, param_name: str) -> Tensor | None:
        param = getattr(module, param_name, None)
        if param is None or id(param) not in self._scored:
            return None
        return param.detach().float().abs()

    def structure_scores(self, structure: ModelStructure) -> dict[str, Tensor]:
        return structure_scores(structure, self)


register_scorer(
    "magnitude",
    lambda pruner, trainer: MagnitudeScores(pruner.model),
    help="sum of |w| over each structure's weights (no gradients)",
    needs_steps=False,
)
