"""What a search keeps between runs of the same command: its fingerprint (a search with other settings, teacher or
data starts over instead of reusing verdicts it did not earn) and the time it has spent (the budget is for the
whole search, so a resumed run counts what the killed one used; a heartbeat writes it every few seconds)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import threading
import time
from pathlib import Path

from ..recipes import Recipe
from .config import SearchConfig

logger = logging.getLogger(__name__)
FINGERPRINT_NAME = "search.json"
ELAPSED_NAME = "elapsed.json"
HEARTBEAT_S = 10.0
# what a search decides from: every setting but the budget (a larger budget continues the same search)
NOT_FINGERPRINTED = ("budget",)
# what belongs to one search and is discarded when its fingerprint changes (runner stages check their own)
SEARCH_FILES = ("study.db", ELAPSED_NAME, "latency.json", "summary.json", "pareto.md", "pareto.png", "recipe.yaml")


def fingerprint(recipe: Recipe, config: SearchConfig) -> str:
    from .._version import __version__

    resolved = recipe.resolved()
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in NOT_FINGERPRINTED}
    payload = {"teacher": resolved["teacher"], "data": resolved["data"], "seed": resolved["seed"],
               "stages": resolved["stages"], "search": settings, "version": __version__}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def start_or_resume(out: Path, recipe: Recipe, config: SearchConfig, force: bool) -> float:
    """Prepare ``out`` for this search; returns the seconds an interrupted run of the same search already spent.
    A different search (or ``force``) discards the previous one's study, verdicts and outputs first."""
    key = fingerprint(recipe, config)
    marker = out / FINGERPRINT_NAME
    previous = _read(marker).get("fingerprint")
    if force or (previous is not None and previous != key):
        logger.info("%s: the settings, teacher or data changed (or --force): starting the search over", out)
        for name in SEARCH_FILES:
            (out / name).unlink(missing_ok=True)
        for name in ("model", "model-onnx"):
            shutil.rmtree(out / name, ignore_errors=True)
        for variants in out.glob("runs/*/variants.json"):
            variants.unlink()
        if force:
            shutil.rmtree(out / "runs", ignore_errors=True)
            shutil.rmtree(out / "teacher", ignore_errors=True)
    _write(marker, {"fingerprint": key})
    return float(_read(out / ELAPSED_NAME).get("elapsed_s", 0.0))


def _read(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


class Heartbeat:
    """Writes the elapsed time to ``out/elapsed.json`` every `HEARTBEAT_S` seconds while the search runs (a kill
    during a long final loses at most that much of the count)."""

    def __init__(self, out: Path, start: float) -> None:
        self.out, self.start = out, start
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="hf-compress-auto-heartbeat")

    def beat(self) -> None:
        _write(self.out / ELAPSED_NAME, {"elapsed_s": time.monotonic() - self.start})

    def _run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.beat()
