"""`StructuredPruner`: scores, schedule and masks of one model, driven step by step by the trainer."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from transformers import PreTrainedModel, Trainer

from ..models.arch import find_layer_list
from ..models.structure import model_structure
from .config import HomoDistilConfig
from .masks import MaskHooks, StructureMasks, keep_top
from .schedule import cubic_schedule, oneshot_schedule
from .scorers import get_scorer
from .slicing import check_ffn, check_shape, slice_model


class StructuredPruner:
    """Holds the importance scores and masks of ``model`` and applies the masks through forward hooks.

    ``update_scores()`` after each optimizer step that was really applied, gradients still in place (accumulated,
    unscaled and, under DDP, all-reduced, so every rank computes the same scores and masks), as PLATON's code
    does; ``step(global_step)`` after each optimizer step. ``scores`` is the `scorers.ImportanceScorer` that
    ``args.importance`` names, built with this pruner and ``trainer`` (the `HomoDistilTrainer`, or None).
    """

    # Below this mean |grad| (importance-weighted, see `ImportanceScores.signal`) a gradient is float noise.
    NOISE_SIGNAL = 1e-7

    def __init__(self, model: PreTrainedModel, args: HomoDistilConfig, trainer: Trainer | None = None) -> None:
        self.model, self.args = model, args
        self.structure = model_structure(model)
        s = self.structure
        self.targets = {
            "hidden": args.target_hidden_size or s.hidden_size,
            "heads": args.target_num_heads or s.num_heads,
            "ffn": args.target_intermediate_size or s.intermediate_size,
            "layers": args.target_num_layers or len(s.layers),
        }
        full = {"hidden": s.hidden_size, "heads": s.num_heads, "ffn": s.intermediate_size, "layers": len(s.layers)}
        names = {
            "hidden": "target_hidden_size",
            "heads": "target_num_heads",
            "ffn": "target_intermediate_size",
            "layers": "target_num_layers",
        }
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
        self._warned_noise = False
        self.global_step = 0
        pruned = {key: self.targets[key] < full[key] for key in ("hidden", "heads", "ffn")}
        layer_modules = list(find_layer_list(model)[1]) if self.targets["layers"] < full["layers"] else None
        self.hooks = MaskHooks(s, self.masks, **pruned, layer_modules=layer_modules)
        # After the mask hooks, so that a scorer's own hooks see what the masked model computes.
        self.scorer = get_scorer(args.importance)
        self.scores = self.scorer.build(self, trainer)

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

    def update_scores(self) -> bool:
        """Fold the current gradients into the scores; False when refused (non-finite gradients)."""
        if self.finished:  # once at the targets the masks are final and the scores no longer needed
            return True
        return self.scores.update()

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
        self._warn_if_noise()
        scores = self.scores.structure_scores(self.structure)
        # A layer's importance: the scores of the heads and FFN neurons it still keeps (CoFi-style depth pruning).
        layer_scores = (scores["heads"] * self.masks.heads).sum(1) + (scores["ffn"] * self.masks.ffn).sum(1)
        new = {
            "hidden": keep_top(scores["hidden"], self.masks.hidden, kept["hidden"]),
            "heads": keep_top(scores["heads"], self.masks.heads, kept["heads"]),
            "ffn": keep_top(scores["ffn"], self.masks.ffn, kept["ffn"]),
            "layers": keep_top(layer_scores, self.masks.layers, kept["layers"]),
        }
        self.masks.load_state_dict(new)
        return True

    def _warn_if_noise(self) -> None:
        signal = self.scores.first_signal
        if self._warned_noise or signal is None or signal >= self.NOISE_SIGNAL:
            return
        self._warned_noise = True
        warnings.warn(
            f"Pruning at step {self.global_step} ranks structures by importance scores that began ~0 (mean |grad| "
            f"{signal:.2g} at the first step): the student started as the teacher, so its KD gradients were float "
            "noise, which the optimizer turns into the first updates, and the masks rank that noise. Set "
            "importance_label_weight > 0 (or hard_label_weight > 0) to score with the student's own loss, or "
            "importance='magnitude', which needs no gradients (in the benchmarks it ranks best on a small "
            "Fashion-MNIST ViT and 5 points worse than PLATON on MiniLM text: measure both; see the pruning "
            "ablations in benchmarks/RESULTS.md).",
            RuntimeWarning,
            stacklevel=2,
        )

    # ---- state -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """Masks, the scorer's state and name, and the step: what a checkpoint needs to resume exactly."""
        state = {f"mask.{k}": v.clone() for k, v in self.masks.state_dict().items()}
        state.update({f"score.{k}": v.detach().cpu() for k, v in self.scores.state_dict().items()})
        state["global_step"] = torch.tensor(self.global_step)
        state["scorer"] = torch.tensor(list(self.scorer.name.encode()), dtype=torch.uint8)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if "scorer" in state:  # absent from states saved before scorers were named
            saved = bytes(state["scorer"].tolist()).decode()
            if saved != self.scorer.name:
                raise ValueError(
                    f"This pruning state was saved by a run with importance={saved!r}, but this run uses "
                    f"importance={self.scorer.name!r}: the scores cannot continue. Resume with importance={saved!r}, "
                    "or start the pruning run afresh."
                )
        self.masks.load_state_dict({k[len("mask.") :]: v for k, v in state.items() if k.startswith("mask.")})
        self.scores.load_state_dict({k[len("score.") :]: v for k, v in state.items() if k.startswith("score.")})
        self.global_step = int(state["global_step"])

    def sliced_model(self) -> PreTrainedModel:
        """The dense, smaller model that computes what the masked model computes."""
        return slice_model(self.model, self.masks)

    def remove_hooks(self) -> None:
        self.hooks.remove()
        if hasattr(self.scores, "remove_hooks"):  # a scorer that collects inputs (activation) has its own
            self.scores.remove_hooks()
