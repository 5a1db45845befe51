"""The ``evaluate`` stage: measurements only (the summary's teacher row); no output folder."""

from __future__ import annotations

from ..validation import RecipeError
from .registry import StageSpec, register_stage


def check_extras(where: str, extras: dict) -> None:
    if "latency_repeats" in extras and extras["latency_repeats"] < 1:
        raise RecipeError(f"{where}: latency_repeats must be >= 1, got {extras['latency_repeats']}.")


register_stage(StageSpec(
    name="evaluate", config_cls=None, run=None, extras={"latency_repeats": int}, check_extras=check_extras,
    takes_model=True, help="measure a model (accuracy, size, speed-up) against the recipe's data",
))  # fmt: skip
