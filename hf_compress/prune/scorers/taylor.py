"""``taylor``: PLATON's smoothed first-order Taylor sensitivity ``|w * grad|`` without the uncertainty factor
(``I_bar`` alone), per weight or per structure."""

from __future__ import annotations

from .platon import smoothed_scores
from .registry import register_scorer

register_scorer(
    "taylor",
    lambda pruner, trainer: smoothed_scores(pruner, "taylor"),
    help="smoothed first-order Taylor |w * grad| (PLATON without the uncertainty)",
    structure_granularity=True,
)
