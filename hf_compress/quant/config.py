"""`QuantizationConfig`: what `quantize()` does, validated on construction and round-trippable as a dict."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .kinds import QuantizedKind, get_quantized_kind, method_names

DEFAULT_METHOD = "int8_dynamic"  # the method of a config that names none (the fastest on CPU, no calibration)
Observer = Literal["minmax", "percentile"]
CONFIG_VERSION = 1


def _check_choice(name: str, value: Any, literal: Any) -> None:
    if not isinstance(value, str) or value not in get_args(literal):
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(get_args(literal))}.")


def _check_int(name: str, value: Any) -> None:
    """A whole number, not a bool, str or float (``group_size="16"`` / ``16.0`` are mistakes, not sizes)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")


def _check_number(name: str, value: Any, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        expected = "a finite number or None" if optional else "a finite number"
        raise ValueError(f"{name} must be {expected}, got {value!r}.")


@dataclass
class QuantizationConfig:
    """Post-training quantization settings.

    method: the quantized layer kind of the selected Linear layers, one of the registered method kinds
        (`kinds.method_names()`; each kind's ``help`` says what it stores and computes; the README lists them).
    include / exclude / keep_fp32: module-name globs (``fnmatch``) choosing the Linear layers to quantize;
        ``keep_fp32`` is for sensitive layers (also filled from the sensitivity report when ``error_budget``).
    quantize_embeddings: store the word / position / token-type tables in int8 with a scale per row.
    smoothquant_alpha: migrate activation outliers into the weights (SmoothQuant) with this strength (0..1);
        needs calibration data. None = off.
    error_budget: the largest allowed mean (1 - cosine) between float and quantized outputs on the calibration
        data; layers are kept in fp32, most sensitive first, until the budget is met. None = off.
    """

    method: str = DEFAULT_METHOD
    include: list[str] = field(default_factory=lambda: ["*"])
    exclude: list[str] = field(default_factory=list)
    keep_fp32: list[str] = field(default_factory=list)
    quantize_embeddings: bool = True
    group_size: int = 64
    observer: str = "minmax"
    percentile: float = 99.99
    smoothquant_alpha: float | None = None
    num_calibration_batches: int = 8
    error_budget: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or self.method not in method_names():
            raise ValueError(f"method={self.method!r} is not supported; choose one of {method_names()}.")
        _check_choice("observer", self.observer, Observer)
        for name in ("include", "exclude", "keep_fp32"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            elif not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
                raise ValueError(f"{name} must be a list of module-name globs, got {value!r}.")
            else:
                setattr(self, name, list(value))
        if not isinstance(self.quantize_embeddings, bool):
            raise ValueError(f"quantize_embeddings must be true or false, got {self.quantize_embeddings!r}.")
        _check_int("group_size", self.group_size)
        _check_int("num_calibration_batches", self.num_calibration_batches)
        _check_number("percentile", self.percentile)
        _check_number("smoothquant_alpha", self.smoothquant_alpha, optional=True)
        _check_number("error_budget", self.error_budget, optional=True)
        if self.group_size < 2 or self.group_size % 2:
            raise ValueError(f"group_size must be an even number >= 2, got {self.group_size}.")
        if not 50.0 < self.percentile <= 100.0:  # the range is [100 - p, p] percentiles: p <= 50 is empty
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}.")
        if self.smoothquant_alpha is not None and not 0.0 <= self.smoothquant_alpha <= 1.0:
            raise ValueError(f"smoothquant_alpha must be in [0, 1] or None, got {self.smoothquant_alpha}.")
        if self.smoothquant_alpha is not None and not self.kind.quantizes_activations:
            activations = " / ".join(n for n in method_names() if get_quantized_kind(n).quantizes_activations)
            raise ValueError(f"smoothquant_alpha applies to {activations} (activations are quantized).")
        if self.num_calibration_batches < 1:
            raise ValueError(f"num_calibration_batches must be >= 1, got {self.num_calibration_batches}.")
        if self.error_budget is not None and not (math.isfinite(self.error_budget) and self.error_budget > 0):
            raise ValueError(f"error_budget must be a positive number (mean 1 - cosine), got {self.error_budget}.")

    @property
    def kind(self) -> QuantizedKind:
        """The registered `kinds.QuantizedKind` of ``method``."""
        return get_quantized_kind(self.method)

    @property
    def needs_calibration(self) -> bool:
        return self.kind.needs_input_ranges or self.smoothquant_alpha is not None or self.error_budget is not None

    def to_dict(self) -> dict[str, Any]:
        """``{"_type", "_version", "_data"}``: versioned, so old saved configs stay readable."""
        return {"_type": type(self).__name__, "_version": CONFIG_VERSION, "_data": dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> QuantizationConfig:
        """From `to_dict`'s ``{"_type", "_version", "_data"}``; unknown fields are an error listing the valid ones."""
        if not isinstance(payload, dict):
            raise ValueError(f"Expected a serialized {cls.__name__} dict, got {type(payload).__name__}.")
        if payload.get("_type") != cls.__name__ or "_data" not in payload:
            raise ValueError(
                f"Not a serialized {cls.__name__}: expected keys _type, _version, _data, got {payload!r}."
            )
        version = payload.get("_version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"{cls.__name__} _version must be an integer, got {version!r}.")
        if not isinstance(payload["_data"], dict):
            raise ValueError(f"{cls.__name__} _data must be a dict of fields, got {payload['_data']!r}.")
        if version > CONFIG_VERSION:
            raise ValueError(
                f"This {cls.__name__} was written by a newer hf_compress (version {payload['_version']}); upgrade."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(payload["_data"]) - known
        if unknown:
            raise ValueError(f"Unknown QuantizationConfig fields {sorted(unknown)}; valid fields: {sorted(known)}.")
        return cls(**payload["_data"])
