"""Rankings of HomoDistil's structures that only the pruning ablation compares, and how kept sets are compared.

The product's scorers (``importance="platon" / "magnitude" / "fisher" / "activation" / "random"``, in
``hf_compress/prune/scorers/``) are HomoDistilConfig choices, so the ablation variants just set ``importance``. This
module registers two probes that are not product choices, through the same registry a user's scorer goes through:

- ``magnitude_hidden`` / ``magnitude_heads_ffn``: PLATON scores (with the config's smoothing and granularity), with
  magnitude for the kinds named. On the Fashion-MNIST ViT each lands between PLATON and magnitude alone (one seed),
  so magnitude itself is the product choice.
"""

from __future__ import annotations

from torch import Tensor

from hf_compress.prune.scorers import KINDS, get_scorer, register_scorer
from hf_compress.prune.scorers.magnitude import MagnitudeScores

__all__ = ["KINDS", "MIXED", "MixedScores", "kept_overlap"]

# scorer name -> the kinds ranked by magnitude (the others by PLATON)
MIXED = {"magnitude_hidden": ("hidden",), "magnitude_heads_ffn": ("heads", "ffn")}


class MixedScores:
    """PLATON's scores for some kinds, magnitude for ``magnitude_kinds``; updates and state are PLATON's."""

    def __init__(self, pruner, trainer, magnitude_kinds: tuple[str, ...]) -> None:
        self.pruner, self.magnitude_kinds = pruner, magnitude_kinds
        self.own = get_scorer("platon").build(pruner, trainer)
        self.magnitude = MagnitudeScores(pruner.model)

    @property
    def first_signal(self) -> float | None:
        return self.own.first_signal

    def update(self) -> bool:
        return self.own.update()

    def structure_scores(self, structure=None) -> dict[str, Tensor]:
        own = self.own.structure_scores(self.pruner.structure)
        magnitude = self.magnitude.structure_scores(self.pruner.structure)
        return {k: magnitude[k] if k in self.magnitude_kinds else own[k] for k in own}

    def state_dict(self) -> dict[str, Tensor]:
        return self.own.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.own.load_state_dict(state)


def _mixed_factory(kinds: tuple[str, ...]):
    return lambda pruner, trainer: MixedScores(pruner, trainer, kinds)


for _name, _kinds in MIXED.items():
    register_scorer(
        _name,
        _mixed_factory(_kinds),
        help=f"benchmark probe: PLATON, with magnitude for {' / '.join(_kinds)}",
        structure_granularity=True,
    )


def kept_overlap(masks, reference) -> dict[str, float]:
    """Per kind, the fraction of ``masks``' kept structures that ``reference`` keeps too (1.0 = the same set)."""
    out = {}
    for kind in KINDS:
        kept, ref = getattr(masks, kind).bool(), getattr(reference, kind).bool()
        out[kind] = float((kept & ref).sum()) / max(float(kept.sum()), 1.0)
    return out
