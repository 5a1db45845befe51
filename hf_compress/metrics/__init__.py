"""Metrics through `evaluate`: the modules shipped here load offline by path; other names go to the Hub."""

from __future__ import annotations

from pathlib import Path

SHIPPED = ("accuracy", "f1", "mse")
_HERE = Path(__file__).resolve().parent


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
