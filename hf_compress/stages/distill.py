"""The ``distill`` stage: a student (a copy of the current model, a slice of the teacher's layers, an RNN, or a ViT /
DeiT built from a config, which any image teacher, a convnet too, can teach) trained by `DistillationTrainer` against
the teacher, maybe on an augmented, teacher-labelled transfer set."""

from __future__ import annotations

import copy

from ..distill import DistillationConfig, DistillationTrainer, make_student, rnn_stage
from ..validation import RecipeError
from . import training
from .registry import StageSpec, register_stage
from .training import CHECKPOINTS, trainer_data


def check_extras(where: str, extras: dict) -> None:
    layers = extras.get("student_layers")
    if layers is not None:
        if not layers or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers):
            raise RecipeError(
                f"{where}: student_layers must be a non-empty list of teacher layer indices (ints >= 0), got "
                f"{layers!r}; omit it to distil into a copy of the current model."
            )
        if len(set(layers)) != len(layers):
            raise RecipeError(f"{where}: student_layers {layers} names a layer twice; list each layer once.")
    try:
        rnn_stage.check_extras(extras)
    except (ValueError, TypeError) as err:
        raise RecipeError(f"{where}: {err}") from err


def run(ctx, stage, work_dir):
    layers, spec = stage.extras.get("student_layers"), rnn_stage.student_spec(stage.extras)
    if spec is not None:  # an RNN (rnn_stage.py) or a ViT / DeiT student (vit_stage.py)
        student = spec.build(ctx.teacher, layers)
    else:
        student = make_student(ctx.teacher, layers) if layers else copy.deepcopy(ctx.current)
    data = trainer_data(ctx)
    data["train_dataset"] = rnn_stage.transfer_set(ctx.teacher, ctx.data["train"], ctx.processor, stage.extras)
    trainer = DistillationTrainer(model=student, teacher_model=ctx.teacher, args=stage.config(str(work_dir)), **data)
    training.train_resuming(trainer, work_dir)  # (looked up at call time: tests interrupt it)
    return trainer.model


# student / augment / cache_teacher_logits: an RNN student on a transfer set (distill/rnn_stage.py)
register_stage(StageSpec(
    name="distill", config_cls=DistillationConfig, run=run, trains=True, learns_from_teacher=True,
    extras={"student_layers": list, "student": dict, "augment": dict, "cache_teacher_logits": bool},
    defaults=dict(CHECKPOINTS), card_tags=("distillation",), check_extras=check_extras,
    help="distil a student (a copy, teacher layers, an RNN, or a ViT / DeiT) from the teacher",
))  # fmt: skip
