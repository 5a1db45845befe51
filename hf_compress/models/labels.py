"""Class names of a classification head (``config.id2label``) and matching two heads' classes by name.

One rule for the runner (the data's labels against the teacher's head) and the distillation trainer (the
student's head against the teacher's): names are compared case-insensitively and without surrounding spaces,
and transformers' generic ``LABEL_i`` names say nothing, so they never match or refuse anything.
"""

from __future__ import annotations

import re

_GENERIC = re.compile(r"^LABEL_\d+$")


def named_labels(id2label: dict | None) -> dict[int, str] | None:
    """``id2label`` with int keys in id order, or None when it is empty or holds only generic ``LABEL_i`` names."""
    if not id2label:
        return None
    names = {int(k): str(v) for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0]))}
    return None if all(_GENERIC.match(v) for v in names.values()) else names


def _fold(name: str) -> str:
    return name.strip().casefold()


def match_by_name(source: dict[int, str], target: dict[int, str]) -> dict[int, int] | None:
    """For each class id of ``source``, the id of ``target``'s class with the same name; None when the two are not
    the same set of distinct names (``"Positive"`` matches ``"positive"``; ``"pos"`` and ``"Pos"`` in one head are
    not distinct)."""
    index = {_fold(name): i for i, name in target.items()}
    names = [_fold(name) for name in source.values()]
    if len(index) != len(target) or len(set(names)) != len(names) or sorted(index) != sorted(names):
        return None
    return {i: index[_fold(name)] for i, name in source.items()}
