"""``hf-compress auto``: search depth, width, quantization and runtime for the fastest model within an accuracy
budget (or the most accurate within a latency budget), on Optuna, with latency measured on this machine.
Needs the ``auto`` extra (``pip install hf-compress[auto]``: Optuna)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .config import SearchConfig

if TYPE_CHECKING:
    from ..recipes import Recipe

__all__ = ["SearchConfig", "require_optuna", "run_search"]


def require_optuna() -> None:
    """A one-line error naming the extra when Optuna is missing."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise ImportError(
            "hf-compress auto needs Optuna: pip install 'hf-compress[auto]' (or pip install optuna)."
        ) from None


def run_search(recipe: Recipe, output_dir: str | Path, config: SearchConfig, force: bool = False) -> dict:
    """Search for the model ``config`` asks for and write ``output_dir/auto/`` (see `search.run_search`)."""
    require_optuna()
    from .search import run_search as search

    return search(recipe, output_dir, config, force=force)
