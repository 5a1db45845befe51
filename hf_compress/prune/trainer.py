"""`HomoDistilTrainer`: distil a copy of the teacher while pruning it to a smaller, dense model."""

from __future__ import annotations

import copy
import os
from typing import Any

from safetensors.torch import save_file
from transformers import PreTrainedModel, TrainerCallback

from ..distill.checks import head_kind
from ..distill.trainer import DistillationTrainer, load_state_file
from .config import HomoDistilConfig
from .pruner import StructuredPruner

PRUNING_STATE_NAME = "pruning_state.safetensors"


class _PruningCallback(TrainerCallback):
    def __init__(self, pruner: StructuredPruner) -> None:
        self.pruner = pruner

    def on_train_begin(self, args, state, control, **kwargs):
        final = args.final_prune_step
        if state.max_steps and final > state.max_steps:
            raise ValueError(
                f"Pruning reaches its targets at step {final} (prune_end_step / prune_start_step) but training "
                f"stops at step {state.max_steps}: the model would never reach its target shape. Lower "
                "prune_end_step or train longer."
            )
        if state.global_step == 0:
            self.pruner.step(0)

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        # After the step, as PLATON's code does: gradients are complete (accumulated, unscaled, all-reduced) and
        # we know whether the step was applied; a step the fp16 grad scaler skipped for overflow is not scored.
        if optimizer is not None and getattr(optimizer, "step_was_skipped", False):
            return
        self.pruner.update_scores()

    def on_step_end(self, args, state, control, **kwargs):
        self.pruner.step(state.global_step)


class HomoDistilTrainer(DistillationTrainer):
    """HomoDistil (Liang et al., ICLR 2023): the student starts as a copy of the teacher and is pruned step by
    step while it is distilled, so it never drifts far from its teacher.

    ``model`` may be omitted: the student is then a deep copy of ``teacher_model``. Heads, FFN neurons and the
    residual width are masked in the forward pass during training (masked structures contribute nothing), with
    masks from PLATON importance scores on a cubic schedule. The pruning state (scores, masks, step) is saved in
    every Trainer checkpoint, so ``resume_from_checkpoint`` continues exactly. ``save_model()`` writes the
    physically sliced model with a standard config, loadable by plain transformers.
    """

    def __init__(
        self,
        model: PreTrainedModel | None = None,
        teacher_model: PreTrainedModel | str | os.PathLike | None = None,
        args: HomoDistilConfig | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, HomoDistilConfig):
            raise TypeError(
                f"HomoDistilTrainer needs args=HomoDistilConfig(...), got {type(args).__name__}: it adds the pruning "
                "targets and schedule to DistillationConfig."
            )
        if model is None:
            if not isinstance(teacher_model, PreTrainedModel):
                raise TypeError(
                    "Without model=, HomoDistilTrainer starts the student as a copy of the teacher, so teacher_model "
                    "must be a loaded PreTrainedModel (load it with from_pretrained first)."
                )
            model = copy.deepcopy(teacher_model)
            model.requires_grad_(True)  # the teacher may already be frozen by an earlier trainer
            model.train()
        if args.importance_label_weight > 0 and head_kind(model) == "none":
            raise ValueError(
                f"importance_label_weight > 0 scores with the student's own loss, but {type(model).__name__} has no "
                "task or masked-LM head. Use a model with a head (e.g. ...ForMaskedLM), or set "
                "importance_label_weight=0."
            )
        super().__init__(model=model, teacher_model=teacher_model, args=args, **kwargs)
        self.pruner = StructuredPruner(self.model, args)
        self.add_callback(_PruningCallback(self.pruner))
        self._all_layer_pairs = list(self.layer_pairs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Layer-wise KD only for layers still in the student (depth pruning drops whole layers)."""
        layers = self.pruner.masks.layers
        kept = [(s, t) for s, t in self._all_layer_pairs if bool(layers[s])]
        self.layer_pairs = kept if kept else self._all_layer_pairs
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _kept_heads(self):
        """Attention KD compares only the heads the student keeps (pruned ones are deleted at the end)."""
        heads = self.pruner.masks.heads
        if not self.args.attention_kd_kept_heads or bool(heads.all()):
            return None
        return heads.to(self.args.device).bool()

    def _loss_weights(self) -> dict[str, float]:
        weights = super()._loss_weights()
        if self.args.importance_label_weight > 0 and not self.pruner.finished:
            weights["hard_label_loss"] += self.args.importance_label_weight
        return weights

    def _determine_best_metric(self, metrics, trial) -> bool:
        """With ``load_best_model_at_end``, only checkpoints at the final shape compete: an earlier, larger one
        would be sliced under masks its weights were never trained for (or could not be saved at all)."""
        if self.state.global_step < self.args.final_prune_step:
            return False
        return super()._determine_best_metric(metrics, trial)

    def _load_best_model(self) -> None:
        """Load the best checkpoint's weights *and* its masks / scores, so the two always belong together."""
        super()._load_best_model()
        path = os.path.join(self.state.best_model_checkpoint, PRUNING_STATE_NAME)
        if os.path.isfile(path):
            self.pruner.load_state_dict(load_state_file(path))

    def _matched_states(self, s_states, t_states):
        """Hidden / embedding KD on the kept channels only: a pruned channel is zero in the student, and
        comparing it with the teacher would add a constant that hides the loss that can still be learned."""
        student, teacher = super()._matched_states(s_states, t_states)
        if self.pruner.masks.counts()["hidden"] == self.pruner.full["hidden"]:
            return student, teacher
        keep = self.pruner.masks.hidden.to(self.args.device).bool()
        return {k: v[..., keep] for k, v in student.items()}, {k: v[..., keep] for k, v in teacher.items()}

    def sliced_model(self) -> PreTrainedModel:
        """The physically smaller model (a new object; the trainer keeps training the masked one)."""
        return self.pruner.sliced_model()

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints keep the full-size masked student (to resume); a user's save writes the sliced model."""
        if _internal_call:
            return super().save_model(output_dir, _internal_call=True)
        if not self.pruner.finished:
            raise RuntimeError(
                f"The student is not pruned to its targets yet (kept {self.pruner.masks.counts()}, targets "
                f"{self.pruner.targets}, step {self.state.global_step} of prune end step "
                f"{self.args.final_prune_step}). Train until the schedule ends, or resume from a Trainer checkpoint."
            )
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.sliced_model().save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)

    def _save_checkpoint(self, model, trial) -> None:
        if self.args.should_save:
            folder = self._checkpoint_folder(trial)
            state = {k: v.contiguous() for k, v in self.pruner.state_dict().items()}
            save_file(state, os.path.join(folder, PRUNING_STATE_NAME))
        super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, PRUNING_STATE_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{resume_from_checkpoint} has no {PRUNING_STATE_NAME}: it was not written by a HomoDistilTrainer. "
                "Resume from a checkpoint of this pruning run."
            )
        self.pruner.load_state_dict(load_state_file(path))
