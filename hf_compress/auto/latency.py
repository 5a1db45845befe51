"""Latency of every candidate, measured on this machine: each shape is cut from the teacher without training,
quantized and exported as it would be deployed, and timed interleaved with the torch fp32 teacher (the reference,
with a control: the teacher against itself) at the user's batch x length shapes. Results are cached per machine,
teacher architecture and candidate, so a second search (or a resumed one) times only what is new."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from .. import evaluation
from ..quant import QuantizationConfig, quantize
from .config import parse_shape
from .space import ORT_EXPORT, Candidate, Shape, build_untrained, export_for_ort

logger = logging.getLogger(__name__)
CACHE_ENV = "HF_COMPRESS_CACHE"


def cache_path() -> Path:
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hf_compress"
    return Path(root) / "latency.json"


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_key() -> str:
    """What a latency depends on besides the model: the CPU, the threads, and the versions of the runtimes and of
    the code that builds, quantizes and exports the candidates."""
    import transformers

    from .._version import __version__

    versions = [f"torch {torch.__version__}", f"transformers {transformers.__version__}", f"hf_compress {__version__}"]
    for name in ("onnxruntime", "onnx"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            versions.append(f"{name} none")
    threads = torch.get_num_threads()
    export = ",".join(f"{k}={v}" for k, v in sorted(ORT_EXPORT.items()))
    return " | ".join([_cpu_name(), f"{os.cpu_count()} cpus", f"{threads} threads", *versions, f"ort export {export}"])


def teacher_key(teacher) -> str:
    """The teacher's architecture (not its weights: a latency does not depend on them)."""
    config = teacher.config.to_dict()
    skip = ("transformers_version", "_name_or_path")  # the architecture, not where it was loaded from
    keep = {k: v for k, v in sorted(config.items()) if isinstance(v, (int, float, str, bool)) and k not in skip}
    return hashlib.sha256(json.dumps([type(teacher).__name__, keep], sort_keys=True).encode()).hexdigest()[:16]


class LatencyCache:
    """``{machine: {teacher: {candidate key: {"8x128": ratio, "8x128_ms": ms, "8x128_control": ratio, ...}}}}``
    in one JSON file, written after every shape measured (a killed search keeps what it timed)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else cache_path()
        try:
            self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            logger.warning("latency cache %s is unreadable; starting a new one", self.path)
            self.data = {}

    def table(self, teacher) -> dict:
        return self.data.setdefault(machine_key(), {}).setdefault(teacher_key(teacher), {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def _example_calibration(model, shape: tuple[int, int]):
    return evaluation.example_inputs(model, *shape)


def deployable(model, quant: str, runtime: str, work: Path, calibration_shape=(8, 128)):
    """``model`` (left untouched) quantized with ``quant`` (``none``: fp32) for ``runtime``: the torch module, or an
    `OrtModel` over its ONNX export in ``work``."""
    model = copy.deepcopy(model)
    if quant != "none":
        config = QuantizationConfig(method=quant)
        calibration = _example_calibration(model, calibration_shape) if config.needs_calibration else None
        model = quantize(model, config, calibration)
    if runtime == "torch":
        return model.eval()
    folder = Path(tempfile.mkdtemp(prefix="onnx-", dir=work))
    quiet = logging.getLogger("hf_compress.export")
    level, quiet.level = quiet.level, logging.ERROR  # an untrained cut's export check means nothing
    try:
        session, _ = export_for_ort(model, folder)
    finally:
        quiet.setLevel(level)
    return session


def measure_latency(
    teacher,
    candidates: list[Candidate],
    shapes: list[str],
    work: Path,
    cache: LatencyCache,
    repeats: int = 10,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """``{candidate key: {"8x128": latency ratio to the torch fp32 teacher, "8x128_ms": ms, "8x128_control":
    the teacher against itself, ...}}`` for every candidate, timing those the cache lacks one shape at a time
    (all variants of a shape in one interleaved run with the teacher)."""
    table = cache.table(teacher)
    fresh: dict[str, dict] = {}
    wanted = [parse_shape(s) for s in shapes]
    by_shape: dict[Shape, list[Candidate]] = {}
    for candidate in candidates:
        if not all(s in table.get(candidate.key, {}) for s in shapes):
            by_shape.setdefault(candidate.shape, []).append(candidate)
    work.mkdir(parents=True, exist_ok=True)
    for index, (shape, todo) in enumerate(by_shape.items()):
        if progress:
            progress(f"timing {shape.key} ({index + 1}/{len(by_shape)} shapes, {len(todo)} variants)")
        base = build_untrained(teacher, shape)
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            models = {c.key: deployable(base, c.quant, c.runtime, Path(tmp)) for c in todo}
            ratios = evaluation.latency_ratios(teacher, models, shapes=wanted, reps=repeats)
            del models
        control = ratios[evaluation.CONTROL]
        quiet = evaluation.control_warning({s: control[s] for s in shapes}) is None
        for candidate in todo:
            row = {}
            for name in shapes:
                row[name] = ratios[candidate.key][name]
                row[f"{name}_ms"] = ratios[candidate.key][f"{name}_ms"]
                row[f"{name}_control"] = control[name]
            fresh[candidate.key] = row
            if quiet:  # a measurement the control does not trust is used once, never cached
                table[candidate.key] = row
        cache.save()
    return {c.key: fresh.get(c.key) or table[c.key] for c in candidates}
