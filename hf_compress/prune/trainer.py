"""`HomoDistilTrainer`: distil a copy of the teacher while pruning it to a smaller, dense model."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor
from transformers import PreTrainedModel, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, HubStrategy, SaveStrategy
from transformers.utils import PushInProgress, hf_api

from ..distill.checks import head_kind
from ..distill.projection_training import load_state_file
from ..distill.trainer import DistillationTrainer
from ..models.sentence import save_like_teacher
from .config import HomoDistilConfig
from .masks import kept_indices
from .pruner import StructuredPruner

logger = logging.getLogger(__name__)

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
    sentence_modules_on_save = False  # checkpoints are full size; `_write_sliced` writes the pipeline
    """HomoDistil (Liang et al., ICLR 2023): the student starts as a copy of the teacher and is pruned step by
    step while it is distilled, so it never drifts far from its teacher.

    ``model`` may be omitted: the student is then a deep copy of ``teacher_model``. Heads, FFN neurons and the
    residual width are masked in the forward pass during training (masked structures contribute nothing), with
    masks from importance scores (``args.importance``: PLATON by default) on a cubic schedule.

    What each save writes:

    - Trainer checkpoints (``checkpoint-N``): the full-size, masked student plus its masks, scores and step
      (``pruning_state.safetensors``), so ``resume_from_checkpoint`` continues exactly.
    - ``save_model()`` and ``push_to_hub()``: the physically sliced, dense model with a standard config, loadable by
      plain transformers (``push_to_hub`` saves it to ``output_dir``, then uploads); with ``args.push_to_hub``,
      ``save_model()`` uploads it too, as the Trainer does. Both raise before the schedule reaches its targets.
    - Pushes while training (``args.push_to_hub`` with ``hub_strategy`` other than ``"end"``): the top level of the
      model repo gets the sliced model once pruning has reached its targets, and nothing before (a full-size masked
      checkpoint there would load as an unpruned model that computes something else). With ``"checkpoint"`` /
      ``"all_checkpoints"`` each masked checkpoint still goes to ``last-checkpoint`` / ``checkpoint-N`` in the repo,
      to resume from.

    When ``train()`` ends at the target shape, ``trainer.model`` becomes the sliced model: ``save_pretrained``,
    ``evaluate()`` and ``predict()`` then use the dense model (the masked one stays ``trainer.pruner.model``; the
    distillation loss is computed as for the masked student, over the kept heads). Such a trainer trains no more: to
    continue at the final shape, distil ``trainer.model`` with a `DistillationTrainer`.
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
        self._sliced = False  # True once trainer.model is the sliced model (after train() reached the targets)
        self._push_sliced = False  # True inside push_to_hub: its internal save_model writes the sliced model
        super().__init__(model=model, teacher_model=teacher_model, args=args, **kwargs)
        self.pruner = StructuredPruner(self.model, args, trainer=self)
        self.add_callback(_PruningCallback(self.pruner))
        self._all_layer_pairs = list(self.layer_pairs)

    # ---- training, and the sliced model afterwards ----------------------------------------------------

    def train(self, *args: Any, **kwargs: Any):
        """Train and prune; at the target shape, ``trainer.model`` is the sliced model afterwards."""
        if self._sliced:
            raise RuntimeError(
                "This HomoDistilTrainer has finished pruning and trainer.model is now the sliced model, which it "
                "cannot prune again. To train further at the final shape, distil it with "
                "DistillationTrainer(model=trainer.model, teacher_model=...); to repeat the pruning run, build a new "
                "HomoDistilTrainer (resume_from_checkpoint= continues from one of its checkpoints)."
            )
        result = super().train(*args, **kwargs)
        if self.pruner.finished:
            self._use_sliced_model()
        else:
            logger.warning(
                "Training stopped at step %d before pruning reached its targets (prune end step %d): trainer.model "
                "is still the full-size masked student, and trainer.model.save_pretrained() would save unpruned "
                "weights. Resume from a checkpoint (train(resume_from_checkpoint=...)) with more steps; "
                "save_model() refuses until then.",
                self.state.global_step,
                self.args.final_prune_step,
            )
        return result

    def _use_sliced_model(self) -> None:
        sliced = self.sliced_model()
        # Nothing wraps the sliced model: evaluation never DDP-wraps, and this trainer does not train it.
        self.model = self.model_wrapped = sliced
        self._sliced = True
        logger.info(
            "Pruning reached its targets %s: trainer.model is now the sliced model (the masked one is "
            "trainer.pruner.model).",
            self.pruner.targets,
        )

    def sliced_model(self) -> PreTrainedModel:
        """The physically smaller model, sliced from the masked student (a new object at each call)."""
        return self.pruner.sliced_model()

    def _check_finished(self, action: str) -> None:
        if self.pruner.finished:
            return
        raise RuntimeError(
            f"The student is not pruned to its targets yet (kept {self.pruner.masks.counts()}, targets "
            f"{self.pruner.targets}, step {self.state.global_step} of prune end step {self.args.final_prune_step}), "
            f"so there is no sliced model to {action}. Train until the schedule ends, or resume from a Trainer "
            "checkpoint."
        )

    # ---- loss --------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Layer-wise KD only for layers still in the student (depth pruning drops whole layers)."""
        layers = self.pruner.masks.layers
        kept = [(s, t) for s, t in self._all_layer_pairs if bool(layers[s])]
        if not kept and self._all_layer_pairs and self._sliced:
            raise ValueError(
                f"Every student layer of the layer map {self._all_layer_pairs} was dropped by depth pruning, so the "
                "sliced model has no layer to compare with the teacher. Evaluate it with hidden_weight=0 and "
                "attention_weight=0, or map kept layers in layer_map."
            )
        self.layer_pairs = kept if kept else self._all_layer_pairs
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _kept_heads(self):
        """Attention KD compares only the heads the student keeps (pruned ones are deleted at the end; the sliced
        model has no others, whatever ``attention_kd_kept_heads`` says)."""
        heads = self.pruner.masks.heads
        if (not self.args.attention_kd_kept_heads and not self._sliced) or bool(heads.all()):
            return None
        return heads.to(self.args.device).bool()

    def _loss_weights(self) -> dict[str, float]:
        weights = super()._loss_weights()
        if self.args.importance_label_weight > 0 and not self.pruner.finished:
            weights["hard_label_loss"] += self.args.importance_label_weight
        return weights

    def _matched_states(self, s_states, t_states):
        """Hidden / embedding KD on the kept channels only: a pruned channel is zero in the student, and
        comparing it with the teacher would add a constant that hides the loss that can still be learned."""
        if self._sliced:
            s_states = self._masked_layout_states(s_states)
        student, teacher = super()._matched_states(s_states, t_states)
        if self.pruner.masks.counts()["hidden"] == self.pruner.full["hidden"]:
            return student, teacher
        keep = self.pruner.masks.hidden.to(self.args.device).bool()
        return {k: v[..., keep] for k, v in student.items()}, {k: v[..., keep] for k, v in teacher.items()}

    def _attention_loss(self, s_maps, t_maps, mask):
        if self._sliced and s_maps:
            s_maps = self._masked_layout_maps(s_maps)
        return super()._attention_loss(s_maps, t_maps, mask)

    def _masked_layout_states(self, states: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """The sliced student's hidden states as the masked student computes them: full width with pruned channels
        at zero, and a dropped layer's output equal to its input (one entry per layer of the full model)."""
        masks, width = self.pruner.masks, self.pruner.full["hidden"]
        keep = kept_indices(masks.hidden).to(states[0].device)

        def widen(x: Tensor) -> Tensor:
            return x if x.shape[-1] == width else x.new_zeros(*x.shape[:-1], width).index_copy(-1, keep, x)

        out, position = [widen(states[0])], 0
        for kept in masks.layers.tolist():
            position += int(bool(kept))
            out.append(widen(states[position]))
        return tuple(out)

    def _masked_layout_maps(self, maps: tuple[Tensor, ...]) -> tuple[Tensor | None, ...]:
        """The sliced student's attention maps at their layer and head positions in the full model (pruned heads
        zero, dropped layers None: `compute_loss` pairs only kept layers, and only kept heads are compared)."""
        masks, num_heads = self.pruner.masks, self.pruner.full["heads"]
        out, position = [], 0
        for layer, kept in enumerate(masks.layers.tolist()):
            if not kept:
                out.append(None)
                continue
            m = maps[position]
            position += 1
            if m.shape[1] != num_heads:
                heads = kept_indices(masks.heads[layer]).to(m.device)
                m = m.new_zeros(m.shape[0], num_heads, *m.shape[2:]).index_copy(1, heads, m)
            out.append(m)
        return tuple(out)

    # ---- best model, checkpoints and saves ----------------------------------------------------------

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

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Trainer checkpoints keep the full-size masked student (to resume); a user's save and `push_to_hub` write
        the sliced model (a user's save also uploads it when ``args.push_to_hub``, as the Trainer does)."""
        if _internal_call and not self._push_sliced:
            return super().save_model(output_dir, _internal_call=True)
        self._check_finished("save")
        if self.args.should_save:
            self._write_sliced(output_dir or self.args.output_dir)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _write_sliced(self, output_dir: str) -> None:
        """What the Trainer's ``_save`` writes, with the sliced model: weights, config, processor, and the arguments
        as ``training_args.json`` (no pickle, as `JsonTrainingArgs`)."""
        os.makedirs(output_dir, exist_ok=True)
        sliced = self.model if self._sliced else self.sliced_model()
        sliced.save_pretrained(output_dir)
        if self.teacher is not None:
            save_like_teacher(sliced, self.accelerator.unwrap_model(self.teacher), output_dir)
        tokenizer = getattr(self.data_collator, "tokenizer", None)
        processor = self.processing_class if self.processing_class is not None else tokenizer
        if processor is not None:
            processor.save_pretrained(output_dir)
        with open(os.path.join(output_dir, "training_args.json"), "w") as handle:
            handle.write(self.args.to_json_string())

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs: Any,
    ):
        """Save the sliced model to ``output_dir`` and upload it with its model card (checkpoint folders are not
        uploaded); a RuntimeError before pruning reaches its targets. Arguments as `Trainer.push_to_hub`."""
        self._check_finished("push")
        self._push_sliced = True
        try:
            return super().push_to_hub(commit_message, blocking, token, revision, private, **kwargs)
        finally:
            self._push_sliced = False

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """A push while training (``args.push_to_hub``, ``hub_strategy`` other than ``"end"``). The Trainer would
        copy the checkpoint's full-size masked weights to the repo's top level; here the top level gets the sliced
        model once pruning has reached its targets, and nothing before. The checkpoint itself (masks and scores
        included) still goes to ``last-checkpoint`` / ``checkpoint-N`` with ``"checkpoint"`` /
        ``"all_checkpoints"``, to resume from."""
        args = self.args
        if not self.is_world_process_zero() or args.hub_strategy == HubStrategy.END:
            return
        in_progress = getattr(self, "push_in_progress", None)
        if not args.hub_always_push and in_progress is not None and not in_progress.is_done():
            return
        push_model = self.pruner.finished
        push_checkpoint = args.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS)
        if not push_model:
            logger.info(
                "Step %d: the model repo gets the sliced model once pruning reaches its targets (step %d); the "
                "full-size masked checkpoint is not pushed as the model.",
                self.state.global_step,
                args.final_prune_step,
            )
        if not (push_model or push_checkpoint):
            return
        self.callback_handler.on_push_begin(args, self.state, self.control)
        if args.save_strategy == SaveStrategy.STEPS:
            commit_message = f"Training in progress, step {self.state.global_step}"
        else:
            commit_message = f"Training in progress, epoch {int(self.state.epoch)}"
        upload = dict(repo_id=self.hub_model_id, token=args.hub_token, run_as_future=True, revision=args.hub_revision)
        jobs = []
        if push_model:
            self._write_sliced(args.output_dir)
            jobs.append(
                hf_api().upload_folder(
                    folder_path=args.output_dir,
                    commit_message=commit_message,
                    ignore_patterns=["_*", f"{PREFIX_CHECKPOINT_DIR}-*"],
                    **upload,
                )
            )
        if push_checkpoint:
            path_in_repo = (
                "last-checkpoint" if args.hub_strategy == HubStrategy.CHECKPOINT else Path(checkpoint_folder).name
            )
            jobs.append(
                hf_api().upload_folder(
                    folder_path=checkpoint_folder,
                    path_in_repo=path_in_repo,
                    commit_message=f"{commit_message}, checkpoint",
                    **upload,
                )
            )
        if in_progress is None or in_progress.is_done():
            self.push_in_progress = PushInProgress(jobs)
        else:
            in_progress.jobs.extend(jobs)

    def _save_checkpoint(self, model, trial) -> None:
        state = {k: v.contiguous() for k, v in self.pruner.state_dict().items()}  # every rank: a scorer may reduce
        if self.args.should_save:
            folder = self._checkpoint_folder(trial)
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
