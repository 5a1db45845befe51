"""The ``sparsify`` stage: the current model distilled from the teacher while its encoder Linear weights are zeroed
by magnitude (unstructured on a cubic schedule, or 2:4). Its card and the summary say what it measured and that
dense CPU inference is not faster."""

from __future__ import annotations

import copy

from ..sparsity import SparsifyConfig, SparsifyTrainer, measured_sparsity
from . import training
from .registry import StageSpec, register_stage
from .training import CHECKPOINTS, trainer_data


def run(ctx, stage, work_dir):
    trainer = SparsifyTrainer(model=copy.deepcopy(ctx.current), teacher_model=ctx.teacher,
                              args=stage.config(str(work_dir)), **trainer_data(ctx))  # fmt: skip
    training.train_resuming(trainer, work_dir)  # (looked up at call time: tests interrupt it)
    return trainer.model


def note(model) -> str:
    return (
        f"Sparsity: {100 * measured_sparsity(model):.1f}% of the encoder's Linear weights are zero. The model keeps "
        "its shape and is stored dense, so it is not smaller on disk and dense CPU inference is not faster; "
        "a 2:4 pattern runs faster only on GPUs with sparse tensor cores (torch.sparse.to_sparse_semi_structured), "
        "unstructured zeros only in a sparse runtime. For a smaller, faster model use homodistil."
    )


register_stage(StageSpec(
    name="sparsify", config_cls=SparsifyConfig, run=run, trains=True, learns_from_teacher=True, note=note,
    defaults=dict(CHECKPOINTS), card_tags=("sparsity", "distillation"),
    help="zero encoder weights by magnitude (unstructured or 2:4) while distilling",
))  # fmt: skip
