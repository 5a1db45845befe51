"""`SparsifyConfig`: distillation arguments plus the target sparsity, its pattern and its schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ..distill.config import DistillationConfig, check_choice

SparsityPattern = Literal["unstructured", "2:4"]


@dataclass
class SparsifyConfig(DistillationConfig):
    """`DistillationConfig` plus gradual magnitude sparsification of the student's encoder Linear weights.

    ``unstructured``: the fraction of zero weights in each Linear rises from 0 at ``sparsify_start_step`` to
    ``sparsity`` at ``sparsify_end_step`` on Zhu & Gupta's cubic schedule (2017), the masks recomputed by
    magnitude every ``sparsify_every`` optimizer steps; zeroed weights stay zero. ``2:4``: in every group of 4
    consecutive input weights the 2 smallest are zeroed at ``sparsify_start_step`` (a 2:4 pattern is 50 % or
    nothing), and distillation recovers from there. Either way the model keeps its shape: dense CPU inference is
    not faster and the checkpoint is not smaller; 2:4 runs faster only on GPUs with sparse tensor cores.
    """

    sparsity: float = field(default=0.5, metadata={"help": "Fraction of zero weights per encoder Linear at the end."})
    sparsity_pattern: str = field(
        default="unstructured", metadata={"help": "unstructured (any weights) or 2:4 (2 of every 4 inputs)."}
    )
    sparsify_start_step: int = field(default=0, metadata={"help": "Optimizer step at which sparsification starts."})
    sparsify_end_step: int | None = field(
        default=None,
        metadata={
            "help": "Optimizer step at which the target sparsity is reached (unstructured); default: 2/3 of "
            "max_steps, leaving the last third to recover."
        },
    )
    sparsify_every: int = field(default=10, metadata={"help": "Recompute the unstructured masks every N steps."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("sparsity_pattern", self.sparsity_pattern, SparsityPattern)
        value = self.sparsity
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
            raise ValueError(f"sparsity must be a number in (0, 1), got {value!r}.")
        if not 0.0 < value < 1.0:
            raise ValueError(f"sparsity must be in (0, 1) (the fraction of zero weights), got {value}.")
        if self.sparsity_pattern == "2:4" and value != 0.5:
            raise ValueError(f"The 2:4 pattern zeroes exactly half the weights: set sparsity=0.5 (got {value}).")
        for name in ("sparsify_start_step", "sparsify_every"):
            step = getattr(self, name)
            if not isinstance(step, int) or isinstance(step, bool) or step < (0 if name.endswith("start_step") else 1):
                raise ValueError(f"{name} must be an integer >= {0 if 'start' in name else 1}, got {step!r}.")
        if self.max_steps and self.max_steps > 0 and self.sparsify_start_step >= self.max_steps:
            raise ValueError(
                f"sparsify_start_step={self.sparsify_start_step} is not before max_steps={self.max_steps}: the model "
                "would never be sparsified. Start earlier."
            )
        if self.sparsify_end_step is None and self.sparsity_pattern == "unstructured":
            if self.max_steps is None or self.max_steps <= 0:
                raise ValueError(
                    "Gradual sparsification needs sparsify_end_step, or max_steps to default it to 2/3 of the run."
                )
            self.sparsify_end_step = max(self.sparsify_start_step + 1, (2 * self.max_steps) // 3)
        end = self.sparsify_end_step
        if self.sparsity_pattern == "unstructured" and (not isinstance(end, int) or end <= self.sparsify_start_step):
            raise ValueError(
                f"sparsify_end_step must be an integer > sparsify_start_step ({self.sparsify_start_step}), got "
                f"{end!r}; leave steps after it for the model to recover (e.g. 2/3 of max_steps)."
            )
        if self.max_steps and self.max_steps > 0 and self.sparsity_pattern == "unstructured" and end > self.max_steps:
            raise ValueError(
                f"sparsify_end_step={end} is past max_steps={self.max_steps}: the run would end short of the target "
                f"sparsity. Set sparsify_end_step <= {self.max_steps} (e.g. {2 * self.max_steps // 3}) or more steps."
            )
