"""Metrics through `evaluate`: the modules shipped here load offline by path; other names go to the Hub."""

from __future__ import annotations

from pathlib import Path

SHIPPED = ("accuracy", "f1", "mse")
_HERE = Path(__file__).resolve().parent
# Metrics where a smaller value is better (errors and losses); every other metric is a score (higher is better).
LOWER_IS_BETTER = ("mse", "mae", "rmse", "loss", "eval_loss", "wer", "cer", "ter", "perplexity", "log_loss")


def higher_is_better(name: str) -> bool:
    """Whether a larger ``name`` is better: errors and losses (`LOWER_IS_BETTER`, or a name ending in ``_error``
    / ``_loss``) are not."""
    key = name.lower().rsplit("/", 1)[-1]
    return not (key in LOWER_IS_BETTER or key.endswith(("_error", "_loss", "error_rate")))


def percent_of_teacher(name: str, value: float, teacher: float) -> float:
    """The model's quality as % of the teacher's, where below 100 is always worse: ``value / teacher`` for a
    score, ``teacher / value`` for an error (an MSE 7x the teacher's is 14 %, not 700 %); NaN when undefined."""
    if higher_is_better(name):
        return 100.0 * value / teacher if teacher else float("nan")
    return 100.0 * teacher / value if value else (100.0 if teacher == value else float("inf"))


def load_metric(name: str, trust_remote_metric: bool = False):
    """``evaluate.load`` of a shipped metric by path (offline), or, with ``trust_remote_metric=True``, of any
    other metric by name: that runs the metric's code (a local ``./name/name.py`` or a Hub script)."""
    import evaluate

    if name in SHIPPED:
        return evaluate.load(str(_HERE / name))
    if not trust_remote_metric:
        raise ValueError(
            f"metric {name!r} is not shipped (shipped: {list(SHIPPED)}); loading it runs its code. Pass "
            "trust_remote_metric=True (data.trust_remote_metric: true in a recipe) to allow that."
        )
    return evaluate.load(name)
