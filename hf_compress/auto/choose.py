"""Which candidate the search returns, from measured rows only (pure functions: tested on their own).

A row is a dict with ``key``, ``validation`` (the metric on the validation split, or None when not measured),
``speedup`` and ``ms`` (at the objective shape) and ``fast_enough`` (meets the latency constraint). Differences
smaller than the noise are not differences: a validation metric on N rows has a standard error of
sqrt(p (1 - p) / N), and two speed-ups within the latency control's tolerance are treated as equal."""

from __future__ import annotations

import math

from ..evaluation import CONTROL_TOLERANCE


def standard_error(value: float, rows: int) -> float:
    """The standard error of an accuracy ``value`` measured on ``rows`` examples."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}.")
    p = min(max(value, 0.0), 1.0)
    return math.sqrt(p * (1 - p) / rows)


def feasible(rows: list[dict], floor: float | None) -> list[dict]:
    """Rows with a measured metric that meet the latency constraint and, with a floor, the accuracy one."""
    return [r for r in rows if r["validation"] is not None and r["fast_enough"]
            and (floor is None or r["validation"] >= floor)]  # fmt: skip


def choose(rows: list[dict], floor: float | None, validation_rows: int) -> dict | None:
    """The row to return, or None when none is feasible.

    With an accuracy floor: the fastest feasible row; among rows whose speed-up is within the latency noise of
    the fastest, the most accurate. Without one (a latency constraint only): the most accurate feasible row;
    among rows within one standard error of it, the fastest.
    """
    ok = feasible(rows, floor)
    if not ok:
        return None
    if floor is not None:
        fastest = max(r["speedup"] for r in ok)
        close = [r for r in ok if r["speedup"] >= fastest * (1 - CONTROL_TOLERANCE)]
        return max(close, key=lambda r: (r["validation"], r["speedup"]))
    best = max(r["validation"] for r in ok)
    margin = standard_error(best, validation_rows)
    close = [r for r in ok if r["validation"] >= best - margin]
    return max(close, key=lambda r: (r["speedup"], r["validation"]))


def _dominates(a: dict, b: dict) -> bool:
    at_least = a["speedup"] >= b["speedup"] and a["validation"] >= b["validation"]
    return at_least and (a["speedup"] > b["speedup"] or a["validation"] > b["validation"])


def pareto(rows: list[dict]) -> list[dict]:
    """Rows with a measured metric that no other row beats on both speed-up and metric (ties kept)."""
    measured = [r for r in rows if r["validation"] is not None]
    front = []
    for r in measured:
        beaten = any(_dominates(o, r) for o in measured)
        if not beaten:
            front.append(r)
    return sorted(front, key=lambda r: -r["speedup"])
