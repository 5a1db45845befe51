"""`StructuredPruner`: scores, schedule and masks of one model, driven step by step by the trainer."""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedModel

from ..models.structure import model_structure
from .config import HomoDistilConfig
from .masks import MaskHooks, StructureMasks, keep_top
from .schedule import cubic_schedule, oneshot_schedule
from .scores import ImportanceScores, structure_scores
from .slicing import check_ffn, check_shape, slice_model


class StructuredPruner:
    """Holds the importance scores and masks of ``model`` and applies the masks through forward hooks.

    ``update_scores()`` after each backward (gradients already accumulated and, under DDP, all-reduced, so
    every rank computes the same scores and masks); ``step(global_step)`` after each optimizer step.
    """

    def __init__(self, model: PreTrainedModel, args: HomoDistilConfig) -> None:
        self.model, self.args = model, args
        self.structure = model_structure(model)
        s = self.structure
        self.targets = {
            "hidden": args.target_hidden_size or s.hidden_size,
            "heads": args.target_num_heads or s.num_heads,
            "ffn": args.target_intermediate_size or s.intermediate_size,
        }
        full = {"hidden": s.hidden_size, "heads": s.num_heads, "ffn": s.intermediate_size}
        names = {"hidden": "target_hidden_size", "heads": "target_num_heads", "ffn": "target_intermediate_size"}
        for key, target in self.targets.items():
            if target > full[key]:
                raise ValueError(
                    f"{names[key]}={target} is larger than the model's {full[key]}: pruning only removes structures."
                )
        check_shape(s, self.targets["hidden"], self.targets["heads"])
        check_ffn(s, self.targets["hidden"], self.targets["ffn"])
        if self.targets["heads"] < s.num_heads and s.head_prune_refusal:
            raise NotImplementedError(
                f"target_num_heads is not supported for {type(model).__name__}: {s.head_prune_refusal}. Prune "
                "only the FFN (target_intermediate_size; the hidden size is tied to the head count)."
            )
        self.full = full
        self.masks = StructureMasks.full(s)
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        if frozen:
            raise ValueError(
                f"The student has frozen parameters ({', '.join(frozen[:3])}{', ...' if len(frozen) > 3 else ''}); "
                "pruning trains and scores every weight. Call model.requires_grad_(True) first."
            )
        self.scores = ImportanceScores(model, args.importance, args.importance_beta1, args.importance_beta2)
        self.global_step = 0
        pruned = {key: self.targets[key] < full[key] for key in full}
        self.hooks = MaskHooks(s, self.masks, **pruned)

    # ---- schedule ----------------------------------------------------------------------------------

    def kept_at(self, step: int) -> dict[str, int]:
        args = self.args
        if args.pruning_schedule == "oneshot":
            return {k: oneshot_schedule(step, args.prune_start_step, self.full[k], t) for k, t in self.targets.items()}
        return {
            k: cubic_schedule(step, args.prune_start_step, args.prune_end_step, self.full[k], t)
            for k, t in self.targets.items()
        }

    @property
    def finished(self) -> bool:
        """True once the masks are at the targets."""
        return self.masks.counts() == self.targets

    def update_scores(self) -> None:
        if not self.finished:  # once at the targets the masks are final and the scores no longer needed
            self.scores.update()

    def step(self, global_step: int) -> bool:
        """Called after optimizer step ``global_step`` (and with 0 at the start); True if the masks changed."""
        self.global_step = global_step
        args = self.args
        if self.finished or global_step < args.prune_start_step:
            return False
        due = (global_step - args.prune_start_step) % args.prune_every == 0 or global_step >= args.final_prune_step
        if args.pruning_schedule == "oneshot":
            due = global_step >= args.prune_start_step
        if not due:
            return False
        return self.prune_to(self.kept_at(global_step))

    @torch.no_grad()
    def prune_to(self, kept: dict[str, int]) -> bool:
        if kept == self.masks.counts():
            return False
        scores = structure_scores(self.structure, self.scores)
        new = {
            "hidden": keep_top(scores["hidden"], self.masks.hidden, kept["hidden"]),
            "heads": keep_top(scores["heads"], self.masks.heads, kept["heads"]),
            "ffn": keep_top(scores["ffn"], self.masks.ffn, kept["ffn"]),
        }
        self.masks.load_state_dict(new)
        return True

    # ---- state -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        state = {f"mask.{k}": v.clone() for k, v in self.masks.state_dict().items()}
        state.update({f"score.{k}": v.detach().cpu() for k, v in self.scores.state_dict().items()})
        state["global_step"] = torch.tensor(self.global_step)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.masks.load_state_dict({k[len("mask.") :]: v for k, v in state.items() if k.startswith("mask.")})
        self.scores.load_state_dict({k[len("score.") :]: v for k, v in state.items() if k.startswith("score.")})
        self.global_step = int(state["global_step"])

    def sliced_model(self) -> PreTrainedModel:
        """The dense, smaller model that computes what the masked model computes."""
        return slice_model(self.model, self.masks)

    def remove_hooks(self) -> None:
        self.hooks.remove()
