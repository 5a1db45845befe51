"""Pruning schedules (pure): how many structures remain at a given optimizer step."""

from __future__ import annotations


def cubic_schedule(step: int, start: int, end: int, initial: int, final: int) -> int:
    """Kept count at ``step``: ``initial`` up to ``start``, ``final`` from ``end`` on, and in between
    ``final + (initial - final) * (1 - (step - start) / (end - start)) ** 3`` rounded (Zhu & Gupta's cubic
    sparsity schedule, as used by PLATON and HomoDistil). Monotonically non-increasing in ``step``.
    """
    if end <= start:
        raise ValueError(f"The pruning schedule needs prune_end_step > prune_start_step, got {start} and {end}.")
    if step <= start:
        return initial
    if step >= end:
        return final
    remaining = 1.0 - (step - start) / (end - start)
    return final + int(round((initial - final) * remaining**3))


def oneshot_schedule(step: int, start: int, initial: int, final: int) -> int:
    """Kept count for one-shot pruning: ``initial`` before ``start``, ``final`` from ``start`` on."""
    return initial if step < start else final
