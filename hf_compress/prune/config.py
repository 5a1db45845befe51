"""`HomoDistilConfig`: distillation arguments plus the pruning targets, schedule and importance score."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ..distill.config import DistillationConfig, check_choice

PruningSchedule = Literal["cubic", "oneshot"]
Importance = Literal["platon", "taylor", "magnitude"]
ImportanceGranularity = Literal["weight", "structure"]


@dataclass
class HomoDistilConfig(DistillationConfig):
    """`DistillationConfig` plus structured pruning of the student while it is distilled (HomoDistil).

    The student starts as a copy of the teacher; its residual width, attention heads (the same count in every
    layer) and FFN neurons (likewise) are pruned from full size at ``prune_start_step`` to the targets at
    ``prune_end_step`` on a cubic schedule, the masks being recomputed every ``prune_every`` optimizer steps
    from PLATON importance scores. Training then continues at the final shape until ``max_steps``. Saving
    writes the physically smaller model with a standard config.
    """

    target_hidden_size: int | None = field(default=None, metadata={"help": "Residual width after pruning."})
    target_num_heads: int | None = field(default=None, metadata={"help": "Attention heads per layer after pruning."})
    target_intermediate_size: int | None = field(default=None, metadata={"help": "FFN width after pruning."})
    target_num_layers: int | None = field(
        default=None,
        metadata={
            "help": "Encoder layers after pruning (depth and width in one run, CoFi-style): whole layers with the "
            "lowest importance (sum of their kept heads' and FFN neurons' scores) are dropped on the same "
            "schedule. None keeps every layer."
        },
    )
    prune_start_step: int = field(default=0, metadata={"help": "Optimizer step at which pruning starts."})
    prune_end_step: int | None = field(
        default=None, metadata={"help": "Optimizer step at which the targets are reached (cubic schedule)."}
    )
    attention_kd_kept_heads: bool = field(
        default=True,
        metadata={
            "help": "Attention KD compares only the heads the student keeps (per_head: kept pairs; mean: the mean "
            "over kept heads). False compares every head, pruned ones too (the old behaviour; for ablations)."
        },
    )
    recovery_steps: int | None = field(
        default=None,
        metadata={
            "help": "Steps of distillation at the final shape after pruning ends (the recovery phase). Sets "
            "prune_end_step = max_steps - recovery_steps when prune_end_step is not given; needs max_steps. Without "
            "it, the recovery phase is max_steps - prune_end_step."
        },
    )
    prune_every: int = field(default=10, metadata={"help": "Recompute the masks every this many steps."})
    pruning_schedule: str = field(
        default="cubic",
        metadata={
            "help": "'cubic' (HomoDistil: gradual) or 'oneshot' (baseline: prune to the targets at "
            "prune_start_step, then distil).",
            "choices": ["cubic", "oneshot"],
        },
    )
    importance: str = field(
        default="platon",
        metadata={
            "help": "'platon': smoothed sensitivity |w * grad| times its uncertainty; 'taylor': smoothed "
            "first-order Taylor |w * grad|; 'magnitude': |w| (no gradients).",
            "choices": ["platon", "taylor", "magnitude"],
        },
    )
    importance_granularity: str = field(
        default="weight",
        metadata={
            "help": "'weight': PLATON's per-weight EMAs of |w * grad|, a structure scoring the sum over its weights; "
            "'structure': HomoDistil's column score, the EMAs of |sum of w * grad over the structure's weights| (the "
            "first-order loss change of removing it; per-weight noise cancels in the sum). Needs 'platon' or "
            "'taylor'.",
            "choices": ["weight", "structure"],
        },
    )
    importance_beta1: float = field(default=0.85, metadata={"help": "EMA factor of the sensitivity."})
    importance_beta2: float = field(default=0.95, metadata={"help": "EMA factor of the uncertainty."})
    importance_window: int = field(
        default=1,
        metadata={
            "help": "PLATON's ΔT: average the sensitivity |w * grad| over this many applied optimizer steps before "
            "each EMA update (1 = every step; PLATON's GLUE/SQuAD scripts use 10, its code's default is 1)."
        },
    )
    importance_label_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the student's own loss on the labels (task or masked-LM loss), added to the objective "
            "only while pruning is under way, so the importance scores see a real signal: a copy of the teacher "
            "gets ~0 KD gradients at first. Needs labels. After the final mask only hard_label_weight applies."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("pruning_schedule", self.pruning_schedule, PruningSchedule)
        check_choice("importance", self.importance, Importance)
        check_choice("importance_granularity", self.importance_granularity, ImportanceGranularity)
        if self.importance_granularity == "structure" and self.importance == "magnitude":
            raise ValueError(
                "importance_granularity='structure' sums signed w * grad over each structure, which needs gradients: "
                "use importance='platon' or 'taylor', or importance_granularity='weight' for magnitude pruning."
            )
        targets = (
            self.target_hidden_size,
            self.target_num_heads,
            self.target_intermediate_size,
            self.target_num_layers,
        )
        if all(t is None for t in targets):
            raise ValueError(
                "HomoDistilConfig needs at least one pruning target: target_hidden_size, target_num_heads, "
                "target_intermediate_size or target_num_layers."
            )
        names = ("target_hidden_size", "target_num_heads", "target_intermediate_size", "target_num_layers")
        for name, value in zip(names, targets):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.recovery_steps is not None:
            self._resolve_recovery()
        if self.prune_start_step < 0:
            raise ValueError(f"prune_start_step must be >= 0, got {self.prune_start_step}.")
        if self.pruning_schedule == "cubic":
            if self.prune_end_step is None or self.prune_end_step <= self.prune_start_step:
                raise ValueError(
                    f"The cubic schedule needs prune_end_step > prune_start_step ({self.prune_start_step}), got "
                    f"{self.prune_end_step!r}. Set prune_end_step to the optimizer step at which the targets are "
                    "reached, leaving steps after it to recover (e.g. 2/3 of max_steps)."
                )
        if self.pruning_schedule == "oneshot" and self.importance != "magnitude" and self.prune_start_step == 0:
            raise ValueError(
                f"One-shot pruning by '{self.importance}' importance needs gradients from a few steps first: set "
                "prune_start_step >= 1 (e.g. 50), or use importance='magnitude' to prune at step 0."
            )
        if not isinstance(self.importance_window, int) or self.importance_window < 1:
            raise ValueError(f"importance_window must be an integer >= 1, got {self.importance_window!r}.")
        weight = self.importance_label_weight
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"importance_label_weight must be a finite number >= 0, got {weight!r}.")
        if self.prune_every < 1:
            raise ValueError(f"prune_every must be >= 1, got {self.prune_every}.")
        for name in ("importance_beta1", "importance_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")

    def _resolve_recovery(self) -> None:
        recovery = self.recovery_steps
        if not isinstance(recovery, int) or isinstance(recovery, bool) or recovery < 0:
            raise ValueError(f"recovery_steps must be an integer >= 0, got {recovery!r}.")
        if self.max_steps is None or self.max_steps <= 0:
            raise ValueError(
                "recovery_steps counts back from max_steps, but max_steps is not set; set max_steps, or give "
                "prune_end_step instead of recovery_steps."
            )
        end = self.max_steps - recovery
        if self.pruning_schedule == "oneshot":
            if self.prune_start_step > end:
                raise ValueError(
                    f"One-shot pruning at prune_start_step={self.prune_start_step} leaves fewer than recovery_steps="
                    f"{recovery} steps before max_steps={self.max_steps}; prune earlier or recover for fewer steps."
                )
            return
        if self.prune_end_step is None:
            self.prune_end_step = end
        elif self.prune_end_step != end:
            raise ValueError(
                f"prune_end_step={self.prune_end_step} and recovery_steps={recovery} disagree: max_steps="
                f"{self.max_steps} - recovery_steps = {end}. Give only one of the two."
            )

    @property
    def final_prune_step(self) -> int:
        """The optimizer step after which the masks no longer change."""
        return self.prune_start_step if self.pruning_schedule == "oneshot" else self.prune_end_step
