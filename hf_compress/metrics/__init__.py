"""Metrics through `evaluate`: the modules shipped here load offline by path; other names go to the Hub."""

from __future__ import annotations

from pathlib import Path

SHIPPED = ("accuracy", "f1", "mse")
_HERE = Path(__file__).resolve().parent


def load_metric(name: str):
    """``evaluate.load`` of a shipped metric by path (offline), or of any Hub metric by name (needs internet)."""
    import evaluate

    if name in SHIPPED:
        return evaluate.load(str(_HERE / name))
    return evaluate.load(name)
