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


@torch.inference_mode()
def predict(model, dataset, collator=None, batch_size: int = 64) -> tuple[list, list]:
    """(predictions, references) over ``dataset`` with a plain loop (the Trainer refuses quantized models)."""
    model.eval()
    device = next(model.parameters()).device
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


def example_inputs(model, batch: int, length: int = 128) -> dict[str, torch.Tensor]:
    config = model.config
    if getattr(config, "image_size", None):
        return {"pixel_values": torch.randn(batch, config.num_channels, config.image_size, config.image_size)}
    length = min(length, getattr(config, "max_position_embeddings", length))  # tiny test models
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, max(6, config.vocab_size), (batch, length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.inference_mode()
def latency_ratios(reference, models: dict, shapes=((8, 128), (1, 128)), reps: int = 10, warmup: int = 2) -> dict:
    """Median latency of each model over the reference's, per shape, measured interleaved in one process.

    Returns ``{name: {"8x128": ratio, "8x128_ms": median ms, ...}, "__reference__": {...}}``.
    """
    everyone = {"__reference__": reference, **models}
    results: dict[str, dict[str, float]] = {name: {} for name in everyone}
    for batch, length in shapes:
        key = f"{batch}x{length}"
        inputs = example_inputs(reference, batch, length)
        timings: dict[str, list[float]] = {name: [] for name in everyone}
        for model in everyone.values():
            model.eval()
            for _ in range(warmup):
                model(**inputs)
        for _ in range(reps):
            for name, model in everyone.items():
                start = time.perf_counter()
                model(**inputs)
                timings[name].append(time.perf_counter() - start)
        ref = statistics.median(timings["__reference__"])
        for name in everyone:
            median = statistics.median(timings[name])
            results[name][key] = median / ref
            results[name][f"{key}_ms"] = median * 1000
    return results
