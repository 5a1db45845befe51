"""Measurements shared by the CLI, model cards and benchmarks: task metric, parameters, size, latency ratio."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import default_data_collator

from .metrics import load_metric
from .models.arch import config_modality

CONVNET_IMAGE_SIZE = 224  # example images for a model without an image_size (a convnet reads any size)


@torch.inference_mode()
def predict(model, dataset, collator=None, batch_size: int = 64) -> tuple[list, list]:
    """(predictions, references) over ``dataset`` with a plain loop (the Trainer refuses quantized models); ``model``
    may also be an exported model called like one (`export.runtime.OrtModel`, on the CPU)."""
    model.eval()
    device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else torch.device("cpu")
    predictions, references = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator or default_data_collator):
        labels = batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        if logits.shape[-1] == 1:  # regression
            predictions += logits.squeeze(-1).float().tolist()
        else:
            predictions += logits.argmax(-1).tolist()
        references += labels.tolist()
    return predictions, references


def task_metric(model, dataset, metric: str = "accuracy", collator=None, trust_remote_metric: bool = False) -> float:
    predictions, references = predict(model, dataset, collator)
    result = load_metric(metric, trust_remote_metric).compute(predictions=predictions, references=references)
    return float(result[metric] if metric in result else next(iter(result.values())))


def count_params(model) -> int:
    """Parameters, counting a quantized layer's integer weight as the values it stores (int4: two per byte)."""
    total = sum(p.numel() for p in model.parameters())
    for name, buffer in model.named_buffers():
        if name.endswith("weight") and not buffer.is_floating_point():
            total += buffer.numel() * (2 if buffer.dtype == torch.uint8 else 1)
    return total


def folder_size_mb(path: str | Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def weights_size_mb(model) -> float:
    """MiB of the checkpoint `save_pretrained` writes for ``model`` (weights + config)."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return folder_size_mb(tmp)


def _fixed_image_size(model) -> bool:
    return bool(getattr(getattr(model, "config", None), "image_size", None))  # (an ORT session has no config)


def example_inputs(model, batch: int, length: int = 128) -> dict[str, torch.Tensor]:
    """Random inputs of ``batch`` rows: images at the model's image_size (224 for a convnet, which has none), or
    ``length`` token ids (at most its max_position_embeddings)."""
    config = model.config
    if config_modality(config) == "vision":
        size = getattr(config, "image_size", None) or CONVNET_IMAGE_SIZE
        return {"pixel_values": torch.randn(batch, config.num_channels, size, size)}
    length = min(length, getattr(config, "max_position_embeddings", length))  # tiny test models
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, max(6, config.vocab_size), (batch, length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


REFERENCE = "__reference__"
CONTROL = "__control__"
# How far the control (the reference timed against itself) may stray from 1.00x before a ratio is not trusted.
CONTROL_TOLERANCE = 0.05


@torch.inference_mode()
def latency_ratios(
    reference,
    models: dict,
    shapes=((8, 128), (1, 128)),
    reps: int = 10,
    warmup: int = 2,
    max_reps: int | None = None,
    tolerance: float = CONTROL_TOLERANCE,
) -> dict:
    """Median latency of each model over the reference's, per shape, measured interleaved in one process.

    A control, the reference timed a second time in its own slot, measures how far this machine's noise moves a
    ratio that must be 1.00; the order of the models rotates every round so that no slot is favoured. While the
    control is more than ``tolerance`` off, more rounds are run (up to ``max_reps``, default 4 x ``reps``).
    Returns ``{name: {"8x128": ratio, "8x128_ms": median ms, "8x128_reps": rounds, ...}, "__reference__": {...},
    "__control__": {...}}``; `control_warning` says whether the ratios can be trusted.
    """
    everyone = {REFERENCE: reference, CONTROL: reference, **models}
    names = list(everyone)
    # A convnet reference reads any image size: time everyone at the size of the first model that fixes one.
    fixed = [m for m in models.values() if _fixed_image_size(m)]
    convnet_reference = config_modality(reference.config) == "vision" and not _fixed_image_size(reference)
    geometry = fixed[0] if fixed and convnet_reference else reference
    max_reps = max(reps, max_reps or 4 * reps)
    results: dict[str, dict[str, float]] = {name: {} for name in everyone}
    for batch, length in shapes:
        key = f"{batch}x{length}"
        inputs = example_inputs(geometry, batch, length)
        timings: dict[str, list[float]] = {name: [] for name in everyone}
        for model in everyone.values():
            model.eval()
            for _ in range(warmup):
                model(**inputs)
        rounds, target = 0, reps
        while True:
            for _ in range(target - rounds):
                shift = rounds % len(names)
                for name in names[shift:] + names[:shift]:
                    start = time.perf_counter()
                    everyone[name](**inputs)
                    timings[name].append(time.perf_counter() - start)
                rounds += 1
            control = statistics.median(timings[CONTROL]) / statistics.median(timings[REFERENCE])
            if abs(control - 1) <= tolerance or rounds >= max_reps:
                break
            target = min(max_reps, rounds + max(2, reps // 2))
        ref = statistics.median(timings[REFERENCE])
        for name in everyone:
            median = statistics.median(timings[name])
            results[name][key] = median / ref
            results[name][f"{key}_ms"] = median * 1000
            results[name][f"{key}_reps"] = rounds
    return results


def control_warning(control: dict[str, float], tolerance: float = CONTROL_TOLERANCE) -> str | None:
    """None when the control (``{"8x128": ratio, ...}``) is within ``tolerance`` of 1.00x, else a sentence."""
    off = {k: v for k, v in control.items() if "_" not in k and abs(v - 1) > tolerance}
    if not off:
        return None
    measured = ", ".join(f"{v:.2f}x at {k}" for k, v in off.items())
    return (f"Latency not trustworthy: the teacher timed against itself measured {measured} (more than "
            f"{tolerance:.0%} off 1.00x), so the machine was busy; re-measure on a quiet machine.")  # fmt: skip


def format_speedup(
    ratio: float, control: float | None, speedup: bool = True, tolerance: float = CONTROL_TOLERANCE
) -> str:
    """``"2.31x"`` (speed-up = 1 / latency ratio; ``speedup=False``: the ratio, ``"0.43"``), or ``"noisy ..."``
    when this measurement's control was more than ``tolerance`` off: a number that cannot be trusted is not shown."""
    if control is not None and abs(control - 1) > tolerance:
        return f"noisy (control {1 / control:.2f}x)"
    return f"{1 / ratio:.2f}x" if speedup else f"{ratio:.2f}"


def control_summary(records: list[dict], tolerance: float = CONTROL_TOLERANCE) -> str:
    """One line for a summary / card: each measurement's control (teacher vs itself), and whether to trust it."""
    pairs = [(r.get("stage", "?"), r["latency_control_8x128"], r["latency_control_1x128"])
             for r in records if "latency_control_8x128" in r]  # fmt: skip
    if not pairs:
        return "Control (teacher vs itself) not measured: speed-ups are unchecked."
    shown = ", ".join(f"{stage} {1 / a:.2f}x / {1 / b:.2f}x" for stage, a, b in pairs)
    noisy = [stage for stage, a, b in pairs if max(abs(a - 1), abs(b - 1)) > tolerance]
    if noisy:
        return (f"Control, the teacher timed against itself at 8x128 / 1x128: {shown}. More than {tolerance:.0%} "
                f"off 1.00x for {', '.join(noisy)}: those speed-ups are marked noisy (the machine was busy); "
                "re-measure on a quiet machine.")  # fmt: skip
    return f"Control, the teacher timed against itself at 8x128 / 1x128: {shown} (all within {tolerance:.0%})."
