"""`SparsifyTrainer`: distillation while the student's encoder Linear weights are zeroed step by step."""

from __future__ import annotations

import logging

from torch import Tensor
from transformers import PreTrainedModel, TrainerCallback

from ..distill.trainer import DistillationTrainer
from .config import SparsifyConfig
from .masks import apply_weight_masks, magnitude_masks, measured_sparsity

logger = logging.getLogger(__name__)


def sparsity_at(step: int, start: int, end: int, final: float) -> float:
    """The unstructured target at optimizer step ``step``: 0 up to ``start``, ``final`` from ``end`` on, and
    ``final * (1 - (1 - (step - start) / (end - start)) ** 3)`` in between (Zhu & Gupta 2017): fast early,
    while the network has redundancy to spare, slow near the end."""
    if end <= start:
        raise ValueError(f"the sparsity schedule needs end > start, got {start} and {end}.")
    if step <= start:
        return 0.0
    if step >= end:
        return final
    return final * (1.0 - (1.0 - (step - start) / (end - start)) ** 3)


class GradualSparsity(TrainerCallback):
    """Recompute the magnitude masks on the schedule of a `SparsifyConfig` and keep the zeros after every
    optimizer step. Holds no state a checkpoint must carry: zeroed weights are the smallest, so a resumed run
    recomputes the masks of its last scheduled update from the weights themselves and goes on as if never
    stopped."""

    def __init__(self, model: PreTrainedModel, config: SparsifyConfig) -> None:
        self.model, self.config = model, config
        self.masks: dict[str, Tensor] = {}
        self.current = 0.0  # the sparsity of the current masks

    def target(self, step: int) -> float:
        """The sparsity the masks have after optimizer step ``step`` (updates fall every ``sparsify_every`` steps
        from ``sparsify_start_step``, and on ``sparsify_end_step``)."""
        c = self.config
        if step < c.sparsify_start_step:
            return 0.0
        if c.sparsity_pattern == "2:4" or step >= c.sparsify_end_step:
            return c.sparsity
        scheduled = c.sparsify_start_step + (step - c.sparsify_start_step) // c.sparsify_every * c.sparsify_every
        return sparsity_at(scheduled, c.sparsify_start_step, c.sparsify_end_step, c.sparsity)

    def _step(self, step: int) -> None:
        if self.masks:  # the optimizer moved the zeroed weights off zero: back to zero before anything is ranked
            apply_weight_masks(self.model, self.masks)
        target = self.target(step)
        if target > self.current:  # 2:4 is chosen once; unstructured masks only grow (a zero never comes back)
            masks = magnitude_masks(self.model, target, self.config.sparsity_pattern)
            self.masks = {name: keep & self.masks[name] for name, keep in masks.items()} if self.masks else masks
            self.current = target
            apply_weight_masks(self.model, self.masks)

    def on_train_begin(self, args, state, control, **kwargs):
        self._step(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self._step(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        reached = measured_sparsity(self.model)
        if reached + 1e-3 < self.config.sparsity:
            logger.warning(
                "training stopped at step %d with %.1f%% of the encoder weights zero, short of the target %.1f%% "
                "(sparsify_end_step=%s): give it max_steps past sparsify_end_step, or resume from its checkpoint.",
                state.global_step, 100 * reached, 100 * self.config.sparsity, self.config.sparsify_end_step,
            )  # fmt: skip


class SparsifyTrainer(DistillationTrainer):
    """`DistillationTrainer` whose student (by default a copy of the teacher made by the caller) loses its smallest
    encoder weights on the `SparsifyConfig` schedule while it is distilled. The saved model is an ordinary
    checkpoint of the same shape with zeros in it (`sparsity` reports how many)."""

    def __init__(self, model: PreTrainedModel | None = None, teacher_model=None, args=None, **kwargs) -> None:
        if not isinstance(args, SparsifyConfig):
            raise TypeError(f"SparsifyTrainer needs args=SparsifyConfig(...), got {type(args).__name__}.")
        if args.fsdp or args.deepspeed:
            raise ValueError(
                "SparsifyTrainer masks the weights of the module it holds; under FSDP or DeepSpeed those are shards. "
                "Run it with DDP (accelerate launch --multi_gpu) or on one device."
            )
        super().__init__(model=model, teacher_model=teacher_model, args=args, **kwargs)
        magnitude_masks(self.model, args.sparsity, args.sparsity_pattern)  # the pattern must fit: fail before training
        self.sparsity = GradualSparsity(self.model, args)
        self.add_callback(self.sparsity)

    def _determine_best_metric(self, metrics, trial) -> bool:
        """With ``load_best_model_at_end``, only checkpoints at the target sparsity compete (an earlier one is denser
        and would usually score better)."""
        args = self.args
        final = args.sparsify_start_step if args.sparsity_pattern == "2:4" else args.sparsify_end_step
        if self.state.global_step < final:
            return False
        return super()._determine_best_metric(metrics, trial)
