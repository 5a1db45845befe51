"""`EventScorer`: the parts of `ImportanceScorer` shared by scorers that rank only at pruning events (no gradients
folded in after each step, no first-step signal to warn about)."""

from __future__ import annotations

from torch import Tensor

from .registry import check_state


class EventScorer:
    """``update`` accepts every step, ``first_signal`` is None, the state is empty; subclasses that keep a state
    override `state_dict` / `load_state_dict` and set ``name`` (used in error messages)."""

    name = "event"
    first_signal: float | None = None

    def update(self) -> bool:
        return True

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        check_state(self.name, state, set())
