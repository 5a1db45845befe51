"""The ``homodistil`` stage (the student starts as the teacher and is pruned step by step while distilled) and its
baseline ``prune`` (one-shot magnitude pruning to the targets, then distillation); both write the sliced model."""

from __future__ import annotations

import copy

from ..prune import HomoDistilConfig, HomoDistilTrainer
from . import training
from .registry import StageSpec, register_stage
from .training import CHECKPOINTS, trainer_data


def run(ctx, stage, work_dir):
    start = ctx.current if ctx.current is not ctx.teacher else None
    trainer = HomoDistilTrainer(model=copy.deepcopy(start) if start is not None else None, teacher_model=ctx.teacher,
                                args=stage.config(str(work_dir)), **trainer_data(ctx))  # fmt: skip
    training.train_resuming(trainer, work_dir)  # (looked up at call time: tests interrupt it)
    return trainer.sliced_model()


_COMMON = dict(config_cls=HomoDistilConfig, run=run, trains=True, learns_from_teacher=True,
               card_tags=("pruning", "distillation"))  # fmt: skip
register_stage(StageSpec(name="homodistil", defaults=dict(CHECKPOINTS), **_COMMON,
                         help="prune the current model while distilling it (HomoDistil)"))  # fmt: skip
register_stage(StageSpec(name="prune", defaults={"pruning_schedule": "oneshot", "importance": "magnitude",
                                                 **CHECKPOINTS}, **_COMMON,
                         help="one-shot pruning to the targets, then distillation (the baseline)"))  # fmt: skip
