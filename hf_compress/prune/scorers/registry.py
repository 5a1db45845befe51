"""One registration per importance scorer, as `stages.registry` does for stage types: a `ScorerSpec` says how a
scorer is built and what the config checks need to know about it, and `HomoDistilConfig.importance` and
`StructuredPruner` ask the registry instead of naming scorers.

A new scorer is one module that defines a class following `ImportanceScorer` and calls `register_scorer` (imported
once in ``hf_compress/prune/scorers/__init__.py`` for a built-in one; anywhere before the config is built for
one's own), plus its test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import Tensor

from ...registry import Registry, UnknownNameError

if TYPE_CHECKING:
    from transformers import Trainer

    from ...models.structure import ModelStructure
    from ..pruner import StructuredPruner

KINDS = ("hidden", "heads", "ffn")


@runtime_checkable
class ImportanceScorer(Protocol):
    """What `StructuredPruner` asks of the object that ranks the student's structures.

    The pruner builds one per run (``ScorerSpec.factory(pruner, trainer)``) after its masks and mask hooks exist,
    so the scorer may read ``pruner.model`` (the full-size masked student), ``pruner.structure``, ``pruner.masks``
    (hidden (D,), heads (L, H), ffn (L, F), layers (L,); 1.0 = kept), ``pruner.args`` (the `HomoDistilConfig`)
    and ``pruner.finished``; ``trainer`` is the `HomoDistilTrainer` (its ``train_dataset``, ``data_collator``), or
    None for a pruner built without one. A scorer that registers hooks of its own may also define
    ``remove_hooks()``, which `StructuredPruner.remove_hooks` calls.
    """

    first_signal: float | None
    """The scorer's signal at its first update, relative to the weights (see `ImportanceScores.signal`); below
    ``StructuredPruner.NOISE_SIGNAL`` the pruner warns that it ranks float noise. None: nothing to warn about."""

    def update(self) -> bool:
        """Called after every optimizer step that was really applied (not one the fp16 scaler skipped), with the
        step's gradients still on the parameters (accumulated, unscaled and, under DDP, all-reduced), until the
        masks reach the targets. Returns False, changing nothing, when it refuses the step (non-finite gradients);
        a scorer that reads no gradients returns True."""
        ...

    def structure_scores(self, structure: ModelStructure) -> dict[str, Tensor]:
        """Called at each pruning event (every ``prune_every`` steps on the schedule), under ``torch.no_grad()``.

        Returns float CPU tensors, higher = keep: ``hidden`` (D,) per residual channel, ``heads`` (L, H) per head
        of each layer, ``ffn`` (L, F) per FFN neuron of each layer (L layers, H heads, F neurons of the full-size
        model). The pruner keeps the top entries among those still kept (a pruned structure never returns), per
        layer for heads and FFN; a layer scores the sum of its kept heads' and neurons' scores."""
        ...

    def state_dict(self) -> dict[str, Tensor]:
        """Everything needed to continue exactly after a resume (saved in each Trainer checkpoint); may be empty."""
        ...

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a `state_dict` of the same scorer and model; a state of another shape or settings raises."""
        ...


_PROTOCOL = ("first_signal", "update", "structure_scores", "state_dict", "load_state_dict")
ScorerFactory = Callable[["StructuredPruner", "Trainer | None"], ImportanceScorer]


@dataclass(frozen=True)
class ScorerSpec:
    """What the rest of hf_compress needs to know about an importance scorer.

    factory: ``factory(pruner, trainer) -> ImportanceScorer`` (see `ImportanceScorer` for what it may read).
    needs_steps: it ranks only after some training steps (gradients or training activations), so one-shot pruning
        at step 0 is refused; False for a scorer that can rank the untrained student (weights, examples, a seed).
    structure_granularity: it takes ``importance_granularity="structure"`` (PLATON's EMAs per structure).
    """

    name: str
    factory: ScorerFactory
    help: str = ""
    needs_steps: bool = True
    structure_granularity: bool = False

    def build(self, pruner: StructuredPruner, trainer: Trainer | None = None) -> ImportanceScorer:
        """The scorer of one run; a factory result that lacks part of `ImportanceScorer` is a TypeError."""
        scorer = self.factory(pruner, trainer)
        missing = [name for name in _PROTOCOL if not hasattr(scorer, name)]
        if missing:
            raise TypeError(
                f"The factory of importance scorer {self.name!r} returned a {type(scorer).__name__}, which lacks "
                f"{missing} of the ImportanceScorer protocol."
            )
        return scorer


class UnknownScorerError(UnknownNameError, ValueError):
    """An importance scorer that is not registered; the message lists the registered ones. A ValueError too, as
    every other bad config value."""


_REGISTRY: Registry[ScorerSpec] = Registry(
    "importance scorer",
    r"^[a-z][a-z0-9_-]{0,31}$",
    "use 1-32 lower-case letters, digits, '_' or '-', starting with a letter",
    UnknownScorerError,
    lambda name, known: (
        f"importance={name!r} is not a registered importance scorer; choose one of {known} (or "
        "register your own with hf_compress.prune.scorers.register_scorer)."
    ),
)


def register_scorer(
    name: str, factory: ScorerFactory, *, help: str = "", needs_steps: bool = True, structure_granularity: bool = False
) -> ScorerSpec:
    """Register an importance scorer under ``name`` (``HomoDistilConfig(importance=name)``); a bad or duplicate
    name is a ValueError."""
    _REGISTRY.check_new(name)
    if not callable(factory):
        raise TypeError(f"register_scorer({name!r}, ...) needs a callable factory(pruner, trainer), got {factory!r}.")
    return _REGISTRY.add(name, ScorerSpec(name, factory, help, needs_steps, structure_granularity))


def get_scorer(name: str) -> ScorerSpec:
    """The spec of scorer ``name``; `UnknownScorerError` lists the registered ones."""
    return _REGISTRY.get(name)


def scorer_names() -> list[str]:
    return _REGISTRY.names()


def check_state(scorer: str, state: dict[str, Any], expected: set[str]) -> None:
    """Raise when a saved scorer state does not hold exactly the ``expected`` keys (another scorer's or model's)."""
    if set(state) == expected:
        return
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    raise ValueError(
        f"The saved pruning state does not fit the {scorer!r} scorer of this run (missing {missing[:3]}, unexpected "
        f"{extra[:3]}): it was saved by another scorer, settings or model."
    )
