"""Other rankings for HomoDistil's gradual schedule: benchmark probes of *which* structures to keep, not product
options. Each ranker replaces a HomoDistilTrainer's importance scores (``trainer.pruner.scores``) with an object of
the same interface (``update``, ``structure_scores``, ``first_signal``, ``state_dict``), so the schedule, masks,
objective and slicing stay the trainer's own.

- ``fisher``: at each pruning event, the Fisher information of the student's own predictive distribution with
  respect to the structure masks, ``sum over examples of (d log p(y | x) / d mask)^2`` with ``y`` sampled from the
  student (Theis et al. 2018): the second-order change of the student's outputs when a structure is removed.
  Kwon et al. 2022 rank heads and neurons by the empirical Fisher (dataset labels); sampling the labels from the
  student makes it label-free, and it is not zero when the student equals its teacher (where the KD gradient, and
  every first-order score built on it, is). One sampled label per example: unbiased, noisy per example.
- ``activation``: after Wanda (Sun et al. 2023, per weight ``|W_ij| * |X_j|_2``), per input column of the Linears
  that read a structure ``|W[:, j]|_2 * |X_j|_2`` (the L2 norm of the column, where summing Wanda's per-weight
  scores would give the L1 norm), ``X`` from the student's training forward passes since the last event; a
  structure scores the sum over its columns (a hidden channel: over every Linear that reads the residual stream).
- ``magnitude_hidden`` / ``magnitude_heads_ffn``: the trainer's PLATON scores, with magnitude for the kinds named.
- ``random``: a control, not a ranking: scores drawn once per run (seeded) and kept, so the schedule removes the
  structures in one fixed random order and keeps a uniformly random set of each kind. What any ranking adds over
  it is what the choice of the kept set is worth.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from transformers import default_data_collator

from hf_compress.prune.scores import ImportanceScores

Ranker = Literal["fisher", "activation", "magnitude_hidden", "magnitude_heads_ffn", "random"]
RANKERS: tuple[str, ...] = Ranker.__args__
KINDS = ("hidden", "heads", "ffn")


class _Probe:
    """What the pruner needs of its scores, for rankers computed only at pruning events."""

    first_signal = None  # no first-step signal to warn about

    def update(self) -> bool:
        return True

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state:
            raise ValueError("A benchmark ranker keeps no state; this pruning state was saved with PLATON scores.")


class FisherRanker(_Probe):
    """Per-example Fisher information w.r.t. the hidden / head / FFN masks, over ``samples`` training examples
    (the next ones in a fixed order) at each pruning event, labels sampled from the student's own softmax."""

    def __init__(self, pruner, dataset, collator=None, samples: int = 256, seed: int = 0) -> None:
        if samples < 1:
            raise ValueError(f"The Fisher ranker needs >= 1 example per event, got {samples}.")
        self.pruner, self.dataset, self.samples = pruner, dataset, samples
        self.collator = collator or default_data_collator
        self.generator = torch.Generator().manual_seed(seed)
        self.position = 0

    def _example(self) -> dict[str, Tensor]:
        row = self.dataset[self.position % len(self.dataset)]
        self.position += 1
        batch = self.collator([row])
        device = next(self.pruner.model.parameters()).device
        return {k: v.to(device) for k, v in batch.items() if k not in ("labels", "label") and isinstance(v, Tensor)}

    def structure_scores(self, structure=None) -> dict[str, Tensor]:
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
                    logits = model(**self._example()).logits.float()
                    probs = logits.detach().softmax(-1).reshape(-1, logits.shape[-1]).cpu()
                    sampled = torch.multinomial(probs, 1, generator=self.generator).squeeze(1).to(logits.device)
                    log_likelihood = -torch.nn.functional.cross_entropy(
                        logits.reshape(-1, logits.shape[-1]), sampled, reduction="sum"
                    )
                    grads = torch.autograd.grad(log_likelihood, gates, allow_unused=True)
                    for total, grad in zip(fisher, grads):
                        if grad is not None:  # a kind that is not pruned has no hook, so no gradient
                            total += grad.detach().pow(2)
        finally:
            for gate in gates:
                gate.requires_grad_(False)
            model.train(training)
        return {k: v.cpu() for k, v in zip(KINDS, fisher)}


class ActivationRanker(_Probe):
    """|W column| * |input column| (Wanda), inputs collected by forward pre-hooks during training."""

    def __init__(self, pruner) -> None:
        self.pruner = pruner
        s = pruner.structure
        self.reads = list(s.reads_hidden)
        modules = list(dict.fromkeys(self.reads + [p.attn_out for p in s.layers] + [p.ffn_out for p in s.layers]))
        self.squares: dict[int, Tensor] = {}
        self.handles = [m.register_forward_pre_hook(self._hook) for m in modules]

    def _hook(self, module, inputs) -> None:
        # evaluation passes are not the training stream; once the masks are final nothing is ranked any more
        if not module.training or self.pruner.finished:
            return
        x = inputs[0].detach().float()
        squares = x.pow(2).reshape(-1, x.shape[-1]).sum(0)
        key = id(module)
        self.squares[key] = self.squares[key] + squares if key in self.squares else squares

    def _columns(self, module) -> Tensor:
        return self.squares[id(module)].sqrt() * module.weight.detach().float().norm(dim=0)

    @torch.no_grad()
    def structure_scores(self, structure=None) -> dict[str, Tensor]:
        s = self.pruner.structure
        if not self.squares:
            raise RuntimeError("The activation ranker saw no training forward pass before a pruning event.")
        hidden = sum(self._columns(m) for m in self.reads if id(m) in self.squares)
        heads = torch.stack([self._columns(p.attn_out).view(s.num_heads, s.head_dim).sum(1) for p in s.layers])
        ffn = torch.stack([self._columns(p.ffn_out) for p in s.layers])
        self.squares.clear()  # the next event ranks by the passes after this one
        return {"hidden": hidden.cpu(), "heads": heads.cpu(), "ffn": ffn.cpu()}


class RandomRanker(_Probe):
    """Uniform random scores, drawn once from ``seed`` and the same at every event: a random kept set."""

    def __init__(self, pruner, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        masks = pruner.masks
        self.fixed = {kind: torch.rand(getattr(masks, kind).shape, generator=generator) for kind in KINDS}

    def structure_scores(self, structure=None) -> dict[str, Tensor]:
        return {kind: score.clone() for kind, score in self.fixed.items()}


class MixedRanker:
    """The trainer's own scores for some kinds, magnitude for ``magnitude_kinds``."""

    def __init__(self, pruner, magnitude_kinds: tuple[str, ...]) -> None:
        self.pruner, self.own, self.magnitude_kinds = pruner, pruner.scores, magnitude_kinds
        self.magnitude = ImportanceScores(pruner.model, "magnitude", 0.0, 0.0)

    def __getattr__(self, name):  # update, first_signal, state_dict, ...: the trainer's own scores
        if name == "own" or name.startswith("__"):  # not set yet (copy, unpickling): no recursion through self.own
            raise AttributeError(name)
        return getattr(self.own, name)

    def structure_scores(self, structure=None) -> dict[str, Tensor]:
        own = self.own.structure_scores(self.pruner.structure)
        magnitude = self.magnitude.structure_scores(self.pruner.structure)
        return {k: magnitude[k] if k in self.magnitude_kinds else own[k] for k in own}


def install(trainer, ranker: str, dataset, collator=None, seed: int = 0, samples: int = 256) -> None:
    """Replace ``trainer.pruner.scores`` by ``ranker`` (one of RANKERS) before ``trainer.train()``; ``dataset``,
    ``collator`` and ``samples`` (examples per pruning event) feed the Fisher ranker; ``seed`` also draws the random
    ranker's scores."""
    pruner = trainer.pruner
    if ranker == "fisher":
        pruner.scores = FisherRanker(pruner, dataset, collator, samples=samples, seed=seed)
    elif ranker == "activation":
        pruner.scores = ActivationRanker(pruner)
    elif ranker == "magnitude_hidden":
        pruner.scores = MixedRanker(pruner, ("hidden",))
    elif ranker == "magnitude_heads_ffn":
        pruner.scores = MixedRanker(pruner, ("heads", "ffn"))
    elif ranker == "random":
        pruner.scores = RandomRanker(pruner, seed=seed)
    else:
        raise ValueError(f"Unknown ranker {ranker!r}; choose from {', '.join(RANKERS)}.")


def kept_overlap(masks, reference) -> dict[str, float]:
    """Per kind, the fraction of ``masks``' kept structures that ``reference`` keeps too (1.0 = the same set)."""
    out = {}
    for kind in KINDS:
        kept, ref = getattr(masks, kind).bool(), getattr(reference, kind).bool()
        out[kind] = float((kept & ref).sum()) / max(float(kept.sum()), 1.0)
    return out
