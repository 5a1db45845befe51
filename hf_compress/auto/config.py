"""`SearchConfig`: what ``hf-compress auto`` searches for (an accuracy and / or a latency constraint), over which
space (depths, widths, quantization methods, runtimes) and within which wall-clock budget. Every bad value is a
one-line `ValueError` raised here, before any model is loaded."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal, get_args

Runtime = Literal["torch", "onnxruntime"]
Method = Literal["homodistil", "quantize"]
DropUnit = Literal["percent", "points"]

# homodistil stage fields the search sets itself (a `homodistil:` mapping may set the others)
SEARCHED_FIELDS = {"target_hidden_size", "target_num_heads", "target_intermediate_size", "target_num_layers",
                   "max_steps", "prune_end_step", "prune_start_step", "output_dir"}  # fmt: skip
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")
_SHAPE = re.compile(r"^(\d+)x(\d+)$")


def parse_duration(value: str | int | float, name: str = "budget") -> float:
    """Seconds from ``7200``, ``"90m"``, ``"2h"`` or ``"45s"``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be seconds or a duration like '90m' / '2h', got {value!r}.")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{name}={value!r} is not a duration; write seconds (7200) or '90m' / '2h' / '45s'.")
        seconds = float(match[1]) * {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600}[match[2]]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive duration, got {value!r}.")
    return seconds


def parse_drop(value: str | int | float) -> tuple[float, DropUnit]:
    """``"3%"`` (of the teacher's metric) or ``1.5`` / ``"1.5pt"`` (absolute points of accuracy, 1 point = 0.01)."""
    if isinstance(value, bool):
        raise ValueError(f"max_drop must be a number of points or a percentage like '3%', got {value!r}.")
    text = str(value).strip()
    unit: DropUnit = "percent" if text.endswith("%") else "points"
    number = text.rstrip("%").removesuffix("pt").removesuffix("points").strip()
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"max_drop={value!r} is not a number; write '3%' (of the teacher) or 1.5 (points).") from None
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"max_drop must be >= 0 (a drop, not a gain), got {value!r}.")
    if unit == "percent" and amount >= 100:
        raise ValueError(f"max_drop={value!r} allows losing everything; give a drop below 100%.")
    return amount, unit


def parse_shape(value: str) -> tuple[int, int]:
    """``"8x128"`` -> (batch 8, sequence length 128)."""
    match = _SHAPE.match(str(value).strip())
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise ValueError(f"shape {value!r} is not BATCHxLENGTH (e.g. 8x128 or 1x128).")
    return int(match[1]), int(match[2])


def _positive_ints(name: str, values) -> list[int] | None:
    if values is None:
        return None
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {values!r}.")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must hold positive integers, got {v!r}.")
    return sorted(set(values))


def _choices(name: str, values, allowed: tuple[str, ...]) -> list[str]:
    values = [values] if isinstance(values, str) else values
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name} must be a non-empty list; choose from {list(allowed)}.")
    for v in values:
        if v not in allowed:
            raise ValueError(f"{name}: unknown {v!r}; choose from {list(allowed)}.")
    return list(dict.fromkeys(values))


@dataclass
class SearchConfig:
    """The search of ``hf-compress auto``: returns the fastest candidate (at ``objective_shape``, on the chosen
    runtime) whose validation metric meets ``max_drop``, or, with only a latency constraint, the most accurate
    candidate within it.

    max_drop: the accuracy constraint, ``"3%"`` of the teacher or ``1.5`` points (None: latency constraint only).
    min_speedup / max_latency_ms: the latency constraint at ``objective_shape`` (speed-up over the torch fp32
        teacher, or milliseconds on this machine); at most one.
    shapes: the batch x length shapes every candidate is timed at (the summary reports each).
    runtimes: where a candidate may run: ``torch`` (the checkpoint as is) and / or ``onnxruntime`` (its export).
    methods: ``homodistil`` (prune depth and width while distilling, then optionally quantize) and / or
        ``quantize`` (the teacher's shape, quantization only: the quantization-only subspace).
    quant_methods: the quantization methods tried on every trained candidate (``none`` = keep fp32).
    depths / heads: the encoder depths and attention-head counts searched (default: a grid from the teacher; the
        residual width is heads x the teacher's head size, the FFN the teacher's FFN ratio of it).
    budget: the wall-clock budget of the whole search (seconds, or ``"90m"`` / ``"2h"``).
    screen_steps: optimizer steps of a screening run (pruning in the first ``screen_prune_fraction`` of them);
        a run whose validation metric falls too far below the constraint is stopped early (`FloorPruner`).
    final_steps: steps of a finalist's full HomoDistil run (pruning in the first ``final_prune_fraction``).
    finalists: how many screened candidates that pass are trained to ``final_steps`` (fastest first).
    screen_slack: how far (points) below the constraint a screening result may be and still become a finalist:
        short runs under-estimate what the full budget reaches.
    homodistil: recipe fields of the homodistil stages (learning rate, losses, batch size); the defaults are the
        benchmarks' frontier settings.
    """

    max_drop: str | float | None = None
    min_speedup: float | None = None
    max_latency_ms: float | None = None
    objective_shape: str = "8x128"
    shapes: list[str] = field(default_factory=lambda: ["8x128", "1x128"])
    runtimes: list[str] = field(default_factory=lambda: ["torch", "onnxruntime"])
    methods: list[str] = field(default_factory=lambda: ["homodistil", "quantize"])
    quant_methods: list[str] = field(default_factory=lambda: ["none", "int8_dynamic"])
    depths: list[int] | None = None
    heads: list[int] | None = None
    budget: str | float = "2h"
    screen_steps: int = 200
    screen_prune_fraction: float = 0.6
    final_steps: int = 900
    final_prune_fraction: float = 0.6
    finalists: int = 2
    screen_slack: float = 3.0
    homodistil: dict = field(default_factory=dict)
    latency_repeats: int = 10

    def __post_init__(self) -> None:
        from ..quant.kinds import method_names

        if self.max_drop is not None:
            self.drop = parse_drop(self.max_drop)
        if self.min_speedup is not None and self.max_latency_ms is not None:
            raise ValueError("give one latency constraint: min_speedup or max_latency_ms, not both.")
        for name in ("min_speedup", "max_latency_ms"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value <= 0):  # fmt: skip
                raise ValueError(f"{name} must be a positive number, got {value!r}.")
        if self.max_drop is None and self.min_speedup is None and self.max_latency_ms is None:
            raise ValueError("give a constraint: max_drop (e.g. '3%'), min_speedup (e.g. 4) or max_latency_ms.")
        if isinstance(self.shapes, str):
            self.shapes = [self.shapes]
        self.shapes = list(dict.fromkeys([self.objective_shape, *self.shapes]))
        for shape in self.shapes:
            parse_shape(shape)
        self.runtimes = _choices("runtimes", self.runtimes, get_args(Runtime))
        self.methods = _choices("methods", self.methods, get_args(Method))
        self.quant_methods = _choices("quant_methods", self.quant_methods, ("none", *method_names()))
        self.depths = _positive_ints("depths", self.depths)
        self.heads = _positive_ints("heads", self.heads)
        self.budget_s = parse_duration(self.budget)
        for name in ("screen_steps", "final_steps", "finalists", "latency_repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("screen_prune_fraction", "final_prune_fraction"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1): the share of the steps spent pruning, got {value!r}.")
        if not isinstance(self.screen_slack, (int, float)) or self.screen_slack < 0:
            raise ValueError(f"screen_slack must be >= 0 points, got {self.screen_slack!r}.")
        if not isinstance(self.homodistil, dict):
            raise ValueError(f"homodistil must be a mapping of homodistil stage fields, got {self.homodistil!r}.")
        reserved = SEARCHED_FIELDS & set(self.homodistil)
        if reserved:
            raise ValueError(f"homodistil: {sorted(reserved)} are chosen by the search; remove them.")

    def floor(self, teacher_metric: float) -> float | None:
        """The lowest metric that meets ``max_drop`` for a teacher at ``teacher_metric`` (None: no constraint)."""
        if self.max_drop is None:
            return None
        amount, unit = self.drop
        return teacher_metric * (1 - amount / 100) if unit == "percent" else teacher_metric - amount / 100

    def fast_enough(self, speedup: float, ms: float) -> bool:
        """Meets the latency constraint at ``objective_shape`` (always true without one)."""
        if self.min_speedup is not None:
            return speedup >= self.min_speedup
        if self.max_latency_ms is not None:
            return ms <= self.max_latency_ms
        return True

    def describe(self) -> str:
        parts = []
        if self.max_drop is not None:
            amount, unit = self.drop
            parts.append(f"lose at most {amount:g}{'%' if unit == 'percent' else ' points'} of the teacher")
        if self.min_speedup is not None:
            parts.append(f"at least {self.min_speedup:g}x faster at {self.objective_shape}")
        if self.max_latency_ms is not None:
            parts.append(f"at most {self.max_latency_ms:g} ms at {self.objective_shape}")
        return ", ".join(parts)
