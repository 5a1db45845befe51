"""`quantize(model, config, calibration_data)`: the one entry point of post-training quantization."""

from __future__ import annotations

import fnmatch
import logging
import warnings

import torch
from torch import nn
from transformers import PreTrainedModel

from ..models.families import not_quantizable
from .calibration import calibration_batches, input_statistics, run_batches, smoothquant_factors
from .config import QuantizationConfig
from .kinds import Calibration, QuantizedKind, extra_kinds
from .serialization import (
    HfCompressQuantizationConfig,
    HfCompressQuantizer,
    add_marker,
    module_description,
    replace_module,
)
from .validation import (
    as_config,
    check_batching,
    check_finite_statistics,
    check_finite_weights,
    check_model,
    check_quantizable,
    warn_unmatched_patterns,
)

logger = logging.getLogger(__name__)


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _tied_output(model: PreTrainedModel) -> nn.Module | None:
    """The output projection tied to the input embeddings (masked-LM decoder), if any."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and getattr(model.config, "tie_word_embeddings", False):
        return output
    return None


def select_linears(model: PreTrainedModel, config: QuantizationConfig) -> dict[str, nn.Linear]:
    """The Linear layers to quantize: matching ``include``, not ``exclude`` / ``keep_fp32``, not tied."""
    tied = _tied_output(model)
    candidates = {n: m for n, m in model.named_modules() if n and _matches(n, config.include)}
    chosen = {
        n: m
        for n, m in candidates.items()
        if isinstance(m, nn.Linear)
        and m is not tied
        and not _matches(n, config.exclude + config.keep_fp32 + not_quantizable(model))
    }
    if config.include != ["*"]:
        for pattern in config.include:
            hits = {n: m for n, m in candidates.items() if fnmatch.fnmatchcase(n, pattern)}
            if hits and not any(isinstance(m, nn.Linear) for m in hits.values()):
                kinds = sorted({type(m).__name__ for m in hits.values()})
                raise ValueError(
                    f"include pattern {pattern!r} matches only modules that cannot be quantized ({', '.join(kinds)}); "
                    "quantize() handles nn.Linear layers (and embeddings through quantize_embeddings)."
                )
    if not chosen:
        raise ValueError(
            f"No Linear layer matches include={config.include} minus exclude={config.exclude} and "
            f"keep_fp32={config.keep_fp32}; check the module names with model.named_modules()."
        )
    return chosen


def _extra_targets(model: PreTrainedModel, config: QuantizationConfig) -> dict[str, tuple[QuantizedKind, nn.Module]]:
    """The modules that the kinds a config switches on (int8 embeddings: ``quantize_embeddings``) replace: each
    module of the kind's float class that the globs leave, except an input embedding tied to the output."""
    tied_input = model.get_input_embeddings() if _tied_output(model) is not None else None
    skip = config.exclude + config.keep_fp32 + not_quantizable(model)
    targets: dict[str, tuple[QuantizedKind, nn.Module]] = {}
    for kind in extra_kinds():
        if not kind.enabled(config):
            continue
        for name, module in model.named_modules():
            if isinstance(module, kind.replaces.cls) and module is not tied_input and not _matches(name, skip):
                targets.setdefault(name, (kind, module))
    return targets


def _extra_candidates(model: PreTrainedModel, config: QuantizationConfig) -> dict[str, nn.Module]:
    """What those kinds could replace (tied or not), whose float weights must be finite before quantizing."""
    classes = tuple(kind.replaces.cls for kind in extra_kinds() if kind.enabled(config))
    skip = config.exclude + config.keep_fp32
    return {n: m for n, m in model.named_modules() if classes and isinstance(m, classes) and not _matches(n, skip)}


def _error(reference: list[torch.Tensor], outputs: list[torch.Tensor]) -> float:
    """Mean (1 - cosine) per example between float and quantized outputs."""
    cos = [torch.nn.functional.cosine_similarity(r, o, dim=1) for r, o in zip(reference, outputs)]
    return float(1 - torch.cat(cos).mean())


def _quantized_linear(name, linear, config, smooth, stats):
    """The method's kind of one selected Linear layer, with what calibration measured for it."""
    entry = stats.get(name)
    input_range = None if entry is None else (float(entry["low"]), float(entry["high"]))
    return config.kind.from_float(linear, config, Calibration(smooth=smooth.get(name), input_range=input_range))


@torch.no_grad()
def sensitivity_report(
    model: PreTrainedModel, config: QuantizationConfig, calibration_data, *, batch_size: int = 8, collate_fn=None
) -> list[tuple[str, float]]:
    """Each selected layer quantized alone: its output error (mean 1 - cosine vs float), most sensitive first."""
    config = _check_inputs(model, config, batch_size, collate_fn)
    if calibration_data is None:
        raise ValueError("sensitivity_report needs calibration_data: the errors are measured on those inputs.")
    batches = calibration_batches(model, calibration_data, config.num_calibration_batches, batch_size, collate_fn)
    linears = select_linears(model, config)
    check_quantizable(linears, config)
    smooth, stats = _calibrate(model, config, linears, batches)
    reference = run_batches(model, batches)
    report = []
    for name, linear in linears.items():
        replace_module(model, name, _quantized_linear(name, linear, config, smooth, stats))
        try:
            report.append((name, _error(reference, run_batches(model, batches))))
        finally:
            replace_module(model, name, linear)
    return sorted(report, key=lambda item: item[1], reverse=True)


def _calibrate(model, config, linears, batches):
    smooth, stats = {}, {}
    if batches is None:
        return smooth, stats
    if config.smoothquant_alpha is not None:
        absmax = input_statistics(model, linears, batches)
        smooth = {
            n: smoothquant_factors(m, absmax[n]["channel_absmax"], config.smoothquant_alpha)
            for n, m in linears.items()
        }
    if config.kind.needs_input_ranges:
        stats = input_statistics(model, linears, batches, config.observer, config.percentile, smooth or None)
        check_finite_statistics(stats)
    return smooth, stats


def _check_inputs(model, config, batch_size, collate_fn) -> QuantizationConfig:
    """Model, config and batching as quantize() needs them (a dict config becomes a QuantizationConfig)."""
    check_model(model)
    config = as_config(config)
    check_batching(batch_size, collate_fn)
    if getattr(model, "is_quantized", False):
        raise ValueError("This model is already quantized; quantize the float model instead.")
    warn_unmatched_patterns(model, config)
    return config


def _fit_error_budget(model: PreTrainedModel, config: QuantizationConfig, batches, batch_size: int) -> list[str]:
    """The layers to keep in fp32, most sensitive first, until the quantized model's error is within the budget
    (all layers but one at most; a warning says when even that misses it)."""
    report = sensitivity_report(model, config, batches, batch_size=batch_size)
    keep: list[str] = []
    while True:
        trial = QuantizationConfig.from_dict(config.to_dict())
        trial.keep_fp32, trial.error_budget = config.keep_fp32 + keep, None
        reference = run_batches(model, batches)
        error = _error(reference, run_batches(_quantize_copy(model, trial, batches), batches))
        if error <= config.error_budget or len(keep) == len(report) - 1:
            break
        keep.append(report[len(keep)][0])
    logger.info(
        "error_budget %.2e: keeping %d layers in fp32 (error %.2e): %s", config.error_budget, len(keep), error, keep
    )
    if error > config.error_budget:
        warnings.warn(
            f"error_budget={config.error_budget:.2e} is not met even with all layers but one in fp32 (error "
            f"{error:.2e}); raise the budget, or quantize fewer layers with include / exclude.",
            UserWarning,
            stacklevel=4,
        )
    return keep


@torch.no_grad()
def quantize(
    model: PreTrainedModel,
    config: QuantizationConfig | dict | None = None,
    calibration_data=None,
    *,
    batch_size: int = 8,
    collate_fn=None,
) -> PreTrainedModel:
    """Quantize ``model`` in place and return it, ready for inference and for ``save_pretrained``.

    config: a `QuantizationConfig` or a dict of its fields.
    calibration_data: a `datasets.Dataset` of model inputs (``input_ids`` / ``pixel_values`` ...), a list of row
    dicts, an iterable of batches or one batch dict; needed for a method with calibrated activation ranges
    (`QuantizedKind.needs_input_ranges`), SmoothQuant and ``error_budget``.
    Half-precision (bf16 / fp16) models stay in their dtype; the int8 kernels compute in fp32 inside.
    """
    config = _check_inputs(model, config, batch_size, collate_fn)
    model.eval()
    batches = None
    if config.needs_calibration:
        batches = calibration_batches(model, calibration_data, config.num_calibration_batches, batch_size, collate_fn)
    elif calibration_data is not None:
        logger.info("calibration_data is ignored: %s needs none.", config.method)

    linears = select_linears(model, config)
    check_finite_weights({**linears, **_extra_candidates(model, config)})
    check_quantizable(linears, config)  # before any layer is replaced: an error never leaves a half-quantized model
    if config.error_budget is not None:
        keep = _fit_error_budget(model, config, batches, batch_size)
        linears = {n: m for n, m in linears.items() if n not in keep}
        config = QuantizationConfig.from_dict(config.to_dict())
        config.keep_fp32 = config.keep_fp32 + keep

    smooth, stats = _calibrate(model, config, linears, batches)
    specs: dict[str, dict] = {}
    for name, linear in linears.items():
        module = _quantized_linear(name, linear, config, smooth, stats)
        replace_module(model, name, module)
        specs[name] = module_description(config.method, module)
    for name, (kind, module) in _extra_targets(model, config).items():
        quantized = kind.from_float(module, config, Calibration())
        replace_module(model, name, quantized)
        specs[name] = module_description(kind.name, quantized)

    quant_config = HfCompressQuantizationConfig(method=config.method, modules=specs, user_config=config.to_dict())
    add_marker(model)
    model.config.quantization_config = quant_config
    model.hf_quantizer = HfCompressQuantizer(quant_config)
    model.is_quantized = True
    model.quantization_method = quant_config.quant_method
    return model


def _quantize_copy(model: PreTrainedModel, config: QuantizationConfig, batches) -> PreTrainedModel:
    import copy

    clone = copy.deepcopy(model)
    linears = select_linears(clone, config)
    smooth, stats = _calibrate(clone, config, linears, batches)
    for name, linear in linears.items():
        replace_module(clone, name, _quantized_linear(name, linear, config, smooth, stats))
    return clone
