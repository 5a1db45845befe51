"""Calibration data handling and activation statistics for SmoothQuant and static int8."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from transformers import default_data_collator

from ..models.arch import modality_of
from .kinds import get_quantized_kind, method_names
from .validation import check_calibration_batch, split_calibration_data

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "pixel_values")
_PAD_HINT = "Pad it to one length or pass collate_fn (e.g. DataCollatorWithPadding(tokenizer))."


def _rows_loader(data, required: str, batch_size: int, collate_fn) -> DataLoader | None:
    """A list of single examples (``[{"input_ids": [...]}, ...]``) batched ``batch_size`` at a time; None when
    ``data`` is not such a list (e.g. a list of ready batches)."""
    if not isinstance(data, (list, tuple)) or not data or not all(isinstance(row, Mapping) for row in data):
        return None
    row_dims = 3 if required == "pixel_values" else 1  # one image (C, H, W) / one token sequence
    try:
        if torch.as_tensor(data[0][required]).dim() != row_dims:
            return None
    except (KeyError, ValueError, TypeError, RuntimeError):  # no such input, or ragged: reported per batch below
        return None
    collate = collate_fn or default_data_collator

    def collate_rows(rows):
        try:
            return collate([{k: v for k, v in row.items() if k in _MODEL_INPUTS} for row in rows])
        except (ValueError, RuntimeError) as err:
            raise ValueError(
                f"Could not batch the calibration rows ({err}). Pad them to one length or pass collate_fn "
                "(e.g. DataCollatorWithPadding(tokenizer))."
            ) from err

    return DataLoader(list(data), batch_size=batch_size, collate_fn=collate_rows)


def calibration_batches(
    model, data, num_batches: int, batch_size: int = 8, collate_fn=None
) -> list[dict[str, Tensor]]:
    """Up to ``num_batches`` batches of model inputs from a `datasets.Dataset`, a list of row dicts, an iterable
    of ready batches (dicts of tensors) or one batch dict. Raises a clear error for empty data or missing columns."""
    if data is None:
        calibrated = ", ".join(n for n in method_names() if get_quantized_kind(n).needs_input_ranges)
        raise ValueError(
            f"This quantization needs calibration_data ({calibrated}, smoothquant_alpha or error_budget)."
        )
    data = split_calibration_data(data)
    required = "pixel_values" if modality_of(model) == "vision" else "input_ids"
    columns = getattr(data, "column_names", None)
    if columns is not None:  # a datasets.Dataset
        if len(data) == 0:
            raise ValueError("calibration_data is empty: pass a few hundred representative examples.")
        if required not in columns:
            raise ValueError(
                f"calibration_data has no {required!r} column (columns: {columns}); tokenize / preprocess it first "
                "so that it holds the model's inputs."
            )
        keep = [c for c in columns if c in _MODEL_INPUTS]
        loader = DataLoader(data.select_columns(keep).with_format("torch"), batch_size=batch_size,
                            collate_fn=collate_fn or default_data_collator)  # fmt: skip
        source: Iterable = loader
    else:
        source = _rows_loader(data, required, batch_size, collate_fn) or data
    batches = []
    try:
        for batch in source:
            if len(batches) == num_batches:
                break
            if not isinstance(batch, Mapping):  # dicts, and the BatchEncoding that tokenizer collators return
                raise ValueError(
                    f"calibration batches must be dicts of model inputs, got {type(batch).__name__}; pass a Dataset, "
                    "a list of row dicts or of batch dicts (e.g. [{'input_ids': ..., 'attention_mask': ...}])."
                )
            if required not in batch:
                raise ValueError(f"calibration batch has no {required!r} (keys: {sorted(batch)}).")
            try:
                batches.append({k: torch.as_tensor(v) for k, v in batch.items() if k in _MODEL_INPUTS})
            except (ValueError, TypeError) as err:  # ragged lists of token ids, strings
                raise ValueError(f"Could not batch calibration_data ({err}). {_PAD_HINT}") from err
            check_calibration_batch(model, batches[-1], len(batches) - 1)
    except RuntimeError as err:  # e.g. stacking rows of different lengths
        raise ValueError(f"Could not batch calibration_data ({err}). {_PAD_HINT}") from err
    if not batches:
        raise ValueError("calibration_data is empty: pass a few hundred representative examples.")
    return batches


@torch.no_grad()
def run_batches(model: nn.Module, batches: list[dict[str, Tensor]]) -> list[Tensor]:
    """The model's main output per batch, flattened per example: logits (start and end logits for question
    answering), else the last hidden state."""
    device = next(model.parameters()).device
    outputs = []
    for batch in batches:
        out = model(**{k: v.to(device) for k, v in batch.items()})
        if getattr(out, "start_logits", None) is not None:
            main = torch.cat([out.start_logits, out.end_logits], dim=-1)
        else:
            main = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
        outputs.append(main.float().flatten(1))
    return outputs


@torch.no_grad()
def input_statistics(
    model: nn.Module,
    modules: dict[str, nn.Linear],
    batches: list[dict[str, Tensor]],
    observer: str = "minmax",
    percentile: float = 99.99,
    divide_by: dict[str, Tensor] | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Per module: ``channel_absmax`` (in,), and the per-tensor ``low`` / ``high`` of its input (divided by
    ``divide_by[name]`` first when given, i.e. after SmoothQuant). ``percentile`` clips outliers."""
    stats: dict[str, dict[str, Tensor]] = {}
    counts: dict[str, int] = {}

    def make_hook(name: str):
        def hook(module, inputs):
            x = inputs[0].detach().float()
            if divide_by is not None and name in divide_by:
                x = x / divide_by[name]
            flat = x.reshape(-1, x.shape[-1])
            entry = stats.setdefault(name, {"channel_absmax": torch.zeros(flat.shape[1])})
            entry["channel_absmax"] = torch.maximum(entry["channel_absmax"], flat.abs().amax(0).cpu())
            if observer == "minmax":
                low, high = flat.min().cpu(), flat.max().cpu()
                entry["low"] = torch.minimum(entry.get("low", low), low)
                entry["high"] = torch.maximum(entry.get("high", high), high)
            else:  # average of per-batch percentiles over a bounded sample
                values = flat.flatten()
                if values.numel() > 2**20:
                    values = values[torch.randperm(values.numel(), device=values.device)[: 2**20]]
                q = torch.quantile(
                    values, torch.tensor([1 - percentile / 100, percentile / 100], device=values.device)
                )
                n = counts.get(name, 0)
                entry["low"] = (entry.get("low", q[0].cpu()) * n + q[0].cpu()) / (n + 1)
                entry["high"] = (entry.get("high", q[1].cpu()) * n + q[1].cpu()) / (n + 1)
                counts[name] = n + 1

        return hook

    handles = [m.register_forward_pre_hook(make_hook(n)) for n, m in modules.items()]
    try:
        run_batches(model, batches)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def smoothquant_factors(linear: nn.Linear, channel_absmax: Tensor, alpha: float) -> Tensor:
    """SmoothQuant per-input-channel divisor s = max|X|^alpha / max|W|^(1 - alpha) (Xiao et al. 2023)."""
    weight_absmax = linear.weight.detach().float().abs().amax(0).cpu().clamp_min(1e-5)
    factors = channel_absmax.clamp_min(1e-5).pow(alpha) / weight_absmax.pow(1 - alpha)
    return factors.clamp_min(1e-5)
