"""``fisher``: at each pruning event, the Fisher information of the student's own predictive distribution with
respect to the structure masks, ``sum over examples of (d log p(y | x) / d mask)^2`` with ``y`` sampled from the
student (Theis et al. 2018): the second-order change of the student's outputs when a structure is removed.

Kwon et al. 2022 rank heads and neurons by the empirical Fisher (dataset labels); sampling the labels from the
student makes it label-free, and it is not zero when the student equals its teacher (where the KD gradient, and
every first-order score built on it, is). One sampled label per example (per non-padding token for token-level
heads): unbiased, noisy per example. The examples are the next ``fisher_samples`` rows of the trainer's
``train_dataset`` in a fixed order, collated one at a time by its ``data_collator``; the labels are drawn from a
generator seeded with ``args.seed``, and both positions are saved in checkpoints.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import IterableDataset
from transformers import default_data_collator

from ...distill.checks import head_kind, is_regression
from .base import EventScorer
from .registry import KINDS, check_state, register_scorer

_LOGIT_HEADS = ("sequence_classification", "token_classification", "image_classification", "masked_lm")
_LABEL_KEYS = ("labels", "label", "label_ids")


class FisherScores(EventScorer):
    """Per-example Fisher information w.r.t. the hidden / head / FFN masks over ``samples`` training examples at
    each pruning event, labels sampled from the student's own softmax."""

    name = "fisher"

    def __init__(self, pruner, trainer, samples: int, seed: int) -> None:
        model = pruner.model
        kind = head_kind(model)
        if kind not in _LOGIT_HEADS or is_regression(model):
            raise ValueError(
                f"importance='fisher' ranks by the student's predictive distribution over classes or tokens, which "
                f"{type(model).__name__} ({'regression' if kind in _LOGIT_HEADS else kind}) does not give. Use a "
                "classification or masked-LM head, or importance='platon' / 'magnitude'."
            )
        if trainer is None:
            raise ValueError(
                "importance='fisher' scores training examples, so it needs the trainer's train_dataset: build the "
                "pruner through HomoDistilTrainer(..., train_dataset=...)."
            )
        self.pruner, self.trainer, self.samples = pruner, trainer, samples
        self.generator = torch.Generator().manual_seed(seed)
        self.position = 0  # examples scored so far: the next event starts at this row
        self.inputs = set(inspect.signature(model.forward).parameters) - set(_LABEL_KEYS)
        if trainer.train_dataset is not None:
            self._dataset()

    def _dataset(self):
        dataset = self.trainer.train_dataset
        if dataset is None:
            raise RuntimeError("importance='fisher' needs the trainer's train_dataset to score, and it has none.")
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            raise ValueError(
                f"importance='fisher' walks the train_dataset by index, but a {type(dataset).__name__} has no "
                "len() / indexing. Use a datasets.Dataset (or a map-style torch Dataset), or another importance."
            )
        return dataset

    def _example(self, dataset, collator) -> dict[str, Tensor]:
        row = dataset[self.position % len(dataset)]
        self.position += 1
        if not isinstance(row, Mapping):
            raise TypeError(f"importance='fisher' needs dataset rows as dicts of model inputs, got {type(row)}.")
        with torch.random.fork_rng(devices=[]):  # a masking collator must not move the training's random stream
            batch = collator([{k: v for k, v in row.items() if k in self.inputs}])
        device = next(self.pruner.model.parameters()).device
        return {k: v.to(device) for k, v in batch.items() if k in self.inputs and isinstance(v, Tensor)}

    def _sampled_log_likelihood(self, batch: dict[str, Tensor]) -> Tensor:
        """``log p(y | x)`` of the student, ``y`` drawn from its own softmax (per position for token-level logits)."""
        logits = self.pruner.model(**batch).logits.float()
        flat = logits.reshape(-1, logits.shape[-1])
        if logits.dim() == 3 and "attention_mask" in batch:  # padding positions are not examples
            flat = flat[batch["attention_mask"].reshape(-1).bool()]
        probs = flat.detach().softmax(-1).cpu()
        sampled = torch.multinomial(probs, 1, generator=self.generator).squeeze(1).to(flat.device)
        return -F.cross_entropy(flat, sampled, reduction="sum")

    def structure_scores(self, structure=None) -> dict[str, Tensor]:
        dataset = self._dataset()
        collator = self.trainer.data_collator or default_data_collator
        masks = self.pruner.masks
        gates = [masks.hidden, masks.heads, masks.ffn]  # the tensors the forward hooks multiply by
        fisher = [torch.zeros_like(g) for g in gates]
        model = self.pruner.model
        training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                for gate in gates:
                    gate.requires_grad_(True)
                for _ in range(self.samples):
                    log_likelihood = self._sampled_log_likelihood(self._example(dataset, collator))
                    grads = torch.autograd.grad(log_likelihood, gates, allow_unused=True)
                    for total, grad in zip(fisher, grads):
                        if grad is not None:  # a kind that is not pruned has no hook, so no gradient
                            total += grad.detach().pow(2)
        finally:
            for gate in gates:
                gate.requires_grad_(False)
            model.train(training)
        return {k: v.cpu() for k, v in zip(KINDS, fisher)}

    def state_dict(self) -> dict[str, Tensor]:
        return {"position": torch.tensor(self.position), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        check_state(self.name, state, {"position", "generator"})
        self.position = int(state["position"])
        self.generator.set_state(state["generator"].to(torch.uint8).cpu())


register_scorer(
    "fisher",
    lambda pruner, trainer: FisherScores(pruner, trainer, pruner.args.fisher_samples, pruner.args.seed),
    help="Fisher information of the student's sampled predictions w.r.t. the masks (label-free)",
    needs_steps=False,
)
