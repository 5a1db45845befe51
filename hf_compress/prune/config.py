"""`HomoDistilConfig`: distillation arguments plus the pruning targets, schedule and importance score."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ..distill.config import DistillationConfig, check_choice
from .scorers import get_scorer, scorer_names

PruningSchedule = Literal["cubic", "oneshot"]
ImportanceGranularity = Literal["weight", "structure"]


@dataclass
class HomoDistilConfig(DistillationConfig):
    """`DistillationConfig` plus structured pruning of the student while it is distilled (HomoDistil).

    The student starts as a copy of the teacher; its residual width, attention heads (the same count in every
    layer) and FFN neurons (likewise) are pruned from full size at ``prune_start_step`` to the targets at
    ``prune_end_step`` on a cubic schedule, the masks being recomputed every ``prune_every`` optimizer steps
    from importance scores (``importance``: PLATON by default, or any registered scorer). Training then continues
    at the final shape until ``max_steps``. Saving writes the physically smaller model with a standard config.
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
            "help": "How structures are ranked: a registered scorer (hf_compress.prune.scorers.scorer_names()). "
            "'platon' (default): smoothed sensitivity |w * grad| times its uncertainty; best on MiniLM text (half "
            "width, mean of 3 seeds 0.792, 4.3 points above a random kept set). 'taylor': the same without the "
            "uncertainty. 'magnitude': |w|, no gradients; best on a small Fashion-MNIST ViT (0.788 vs PLATON 0.781, "
            "3 seeds) but no better than a random set on text (0.745). 'fisher': Fisher information of the student's "
            "sampled predictions w.r.t. the masks over fisher_samples training examples per pruning event; "
            "label-free, ties PLATON on the ViT (0.7815 vs 0.7805) at about 1.6x its wall time. 'activation': "
            "Wanda-style activation x weight column norms of the training inputs (ViT 0.778). 'random': a seeded "
            "random kept set, the control (text 0.749, ViT 0.782). Numbers: the pruning ablations in "
            "benchmarks/RESULTS.md.",
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
    importance_beta1: float = field(default=0.85, metadata={"help": "EMA factor of the sensitivity (platon, taylor)."})
    importance_beta2: float = field(default=0.95, metadata={"help": "EMA factor of the uncertainty (platon)."})
    importance_window: int = field(
        default=1,
        metadata={
            "help": "PLATON's ΔT: average the sensitivity |w * grad| over this many applied optimizer steps before "
            "each EMA update (1 = every step; PLATON's GLUE/SQuAD scripts use 10, its code's default is 1)."
        },
    )
    fisher_samples: int = field(
        default=256,
        metadata={
            "help": "importance='fisher': training examples scored at each pruning event (one forward and backward "
            "pass each, one label sampled from the student per example)."
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
        scorer = get_scorer(self.importance)  # an unknown name lists the registered ones
        check_choice("importance_granularity", self.importance_granularity, ImportanceGranularity)
        if self.importance_granularity == "structure" and not scorer.structure_granularity:
            takes = [name for name in scorer_names() if get_scorer(name).structure_granularity]
            raise ValueError(
                "importance_granularity='structure' sums signed w * grad over each structure, which needs gradients "
                f"and PLATON's EMAs: use importance={' or '.join(repr(n) for n in takes)}, or "
                f"importance_granularity='weight' with importance={self.importance!r}."
            )
        samples = self.fisher_samples
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ValueError(f"fisher_samples must be an integer >= 1, got {samples!r}.")
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
        if self.pruning_schedule == "oneshot" and scorer.needs_steps and self.prune_start_step == 0:
            at_zero = [repr(n) for n in scorer_names() if not get_scorer(n).needs_steps]
            raise ValueError(
                f"One-shot pruning by '{self.importance}' importance needs gradients from a few steps first: set "
                f"prune_start_step >= 1 (e.g. 50), or use importance={' / '.join(at_zero)} to prune at step 0."
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
