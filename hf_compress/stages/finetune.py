"""The ``finetune`` stage: the stock Trainer on the recipe's data; its output is the teacher of later stages."""

from __future__ import annotations

from transformers import Trainer, TrainingArguments

from ..json_args import JsonTrainingArgs
from . import training
from .registry import StageSpec, register_stage
from .training import CHECKPOINTS, trainer_data


class FinetuneTrainer(JsonTrainingArgs, Trainer):
    """The stock Trainer, with the training arguments saved as JSON instead of the pickled training_args.bin
    (as the distillation trainers do)."""


def run(ctx, stage, work_dir):
    trainer = FinetuneTrainer(model=ctx.teacher, args=stage.config(str(work_dir)), **trainer_data(ctx))
    training.train_resuming(trainer, work_dir)  # (looked up at call time: tests interrupt it)
    return trainer.model


register_stage(StageSpec(
    name="finetune", config_cls=TrainingArguments, run=run, defaults=dict(CHECKPOINTS), trains=True,
    becomes_teacher=True, card_tags=("fine-tuned",), help="fine-tune the teacher (it becomes the teacher of later "
    "stages)",
))  # fmt: skip
