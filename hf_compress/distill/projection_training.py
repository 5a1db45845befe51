"""The width projections of hidden-state KD (student -> teacher) in a Trainer: their own optimizer parameter
groups, their own gradient clipping, and a file of their own in every checkpoint (restored on resume, never in the
saved student)."""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

PROJECTIONS_NAME = "distillation_projections.safetensors"


class ProjectionTraining:
    """Trainer overrides for a trainer that holds its projections in ``self._projections`` (an ``nn.ModuleDict``,
    maybe empty); placed before ``Trainer`` in the bases."""

    _projections: nn.ModuleDict

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        params = list(self._projections.named_parameters())
        already = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if params and not any(id(p) in already for _, p in params):
            lr = self.args.projection_learning_rate or self.args.learning_rate
            decay = [p for n, p in params if not n.endswith("bias")]
            no_decay = [p for n, p in params if n.endswith("bias")]
            optimizer.add_param_group({"params": decay, "weight_decay": self.args.weight_decay, "lr": lr})
            optimizer.add_param_group({"params": no_decay, "weight_decay": 0.0, "lr": lr})
        return optimizer

    def _clip_grad_norm(self, model):
        """Clip the student as the Trainer does, and the projections on their own with the same max norm."""
        norm = super()._clip_grad_norm(model)
        if len(self._projections):
            # Gradients are already unscaled by the student's clip (fp16), so plain torch clipping is right here.
            torch.nn.utils.clip_grad_norm_(self._projections.parameters(), self.args.max_grad_norm)
        return norm

    def _checkpoint_folder(self, trial) -> str:
        """The folder the Trainer is about to write this step's checkpoint into (created)."""
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        os.makedirs(folder, exist_ok=True)
        return folder

    def _save_checkpoint(self, model, trial) -> None:
        if len(self._projections) and self.args.should_save:
            folder = self._checkpoint_folder(trial)
            state = {k: v.detach().cpu().contiguous() for k, v in self._projections.state_dict().items()}
            save_file(state, os.path.join(folder, PROJECTIONS_NAME))
        super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if not len(self._projections):
            return
        path = os.path.join(resume_from_checkpoint, PROJECTIONS_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{resume_from_checkpoint} has no {PROJECTIONS_NAME}: it was not written by a DistillationTrainer "
                "with the same projections. Resume from a checkpoint of this run, or start without "
                "resume_from_checkpoint."
            )
        self._projections.load_state_dict(load_state_file(path, device=str(self.args.device)))


def load_state_file(path: str, device: str = "cpu") -> dict[str, Tensor]:
    """Read a safetensors state file, turning a truncated or corrupt file into an actionable error."""
    try:
        return load_file(path, device=device)
    except Exception as err:  # safetensors raises its own error types for bad headers / short files
        raise ValueError(
            f"{path} is truncated or corrupt ({err}). Resume from an earlier checkpoint, or delete this checkpoint "
            "folder and start again."
        ) from err
