"""One registration per quantized layer kind, as torchao's ``register_quantize_module_handler`` does for configs: a
`QuantizedKind` says which module class the kind is, how `quantize()` builds it from a float module, what
``config.json`` records about it, how `from_pretrained` builds an empty one, which checkpoint tensors it stores and
how it lowers to ONNX. quantize(), the checkpoint loader and its checks, the ONNX export and the support table ask
the registry instead of naming kinds.

A new kind is one module that defines its layer, builds a `QuantizedKind` and calls `register_quantized_kind`,
imported once in ``hf_compress/quant/__init__.py``, plus its test. A kind registered from outside hf_compress (a
test, a plugin) works the same way once its module is imported, before quantizing or loading.

Two sorts of kinds: a *method* kind (``method=True``) is a `QuantizationConfig.method`; quantize() swaps every
selected ``nn.Linear`` for it, and every such module of a checkpoint has the checkpoint's method as its kind. Other
kinds are switched on by the config itself (``enabled``, e.g. ``quantize_embeddings``) and replace every module of
their float class that the include / exclude globs leave.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..registry import Registry, UnknownNameError

# suffix of a checkpoint tensor -> (shape, its integer dtype, or None for a float tensor of the model's dtype)
ExpectedTensors = dict[str, tuple[tuple[int, ...], torch.dtype | None]]


@dataclass(frozen=True)
class FloatModule:
    """The float module a quantized kind stands for, as its saved description records it.

    cls: the float class (`quantize()` replaces instances of it; a load refuses any other class in its place).
    shape: the description fields that equal the float module's attributes of the same names.
    text: how the description reads in errors, formatted with it (``"a Linear {in_features} -> {out_features}"``).
    """

    cls: type[nn.Module]
    shape: tuple[str, ...]
    text: str

    def matches(self, description: Mapping[str, Any], module: nn.Module) -> bool:
        """``module`` is what a float model holds where this description was saved (class and shape)."""
        return isinstance(module, self.cls) and all(getattr(module, f, None) == description[f] for f in self.shape)

    def describe(self, description: Mapping[str, Any]) -> str:
        return self.text.format(**description)


LINEAR = FloatModule(nn.Linear, ("in_features", "out_features"), "a Linear {in_features} -> {out_features}")


@dataclass(frozen=True)
class Calibration:
    """What calibration measured for one layer, handed to `QuantizedKind.from_float`.

    smooth: the SmoothQuant factors of its input (None without ``smoothquant_alpha``).
    input_range: the (low, high) of its (smoothed) input on the calibration data, for kinds with
        ``needs_input_ranges`` (None otherwise).
    """

    smooth: Tensor | None = None
    input_range: tuple[float, float] | None = None


@dataclass(frozen=True)
class OnnxSite:
    """Where one layer's integer ONNX nodes go in the exported graph.

    name: the layer's module name; node names start with ``name/`` (`prefix`), initializers with ``name.``.
    x: the layer's float input; out: the output name its nodes must produce.
    dynamic_activations: the export's choice for per-call activation quantization (``"torch"`` or ``"ort"``).
    """

    name: str
    x: str
    out: str
    dynamic_activations: str = "torch"

    @property
    def prefix(self) -> str:
        return f"{self.name}/"

    def initializer(self, suffix: str, array: np.ndarray):
        """An initializer named ``<layer>.<suffix>`` holding ``array`` (an onnx TensorProto)."""
        from onnx import numpy_helper

        return numpy_helper.from_array(np.ascontiguousarray(array), f"{self.name}.{suffix}")


@dataclass(frozen=True)
class QuantizedKind:
    """What the rest of hf_compress needs to know about a quantized layer kind.

    module_cls: the quantized layer (an ``nn.Module`` whose buffers are what the checkpoint stores).
    from_float: ``from_float(float_module, config, calibration) -> module``: the quantized layer of one float module
        (``config`` a `QuantizationConfig`, ``calibration`` a `Calibration`).
    describe: ``describe(module) -> dict``: the JSON fields ``config.json`` records for the module (its kind is
        added as ``"kind"``); with them `build` can make an empty module of the same shapes.
    build: ``build(description) -> module``: an empty module from those fields, before the weights load.
    check_description: ``check_description(name, description)``: a ValueError naming the field for a saved
        description that `build` / `expected_tensors` cannot use (``validation.check_linear_description`` covers a
        Linear's in / out features and bias).
    expected_tensors: ``expected_tensors(description) -> {suffix: (shape, int dtype or None for float)}``: the
        tensors a checkpoint stores under the module's name; anything else, missing or extra, refuses the load.
    replaces: the float module it stands for (`LINEAR` for method kinds).
    method: a `QuantizationConfig.method` (quantize() swaps the selected Linear layers for it); else `enabled`
        says whether a config quantizes the modules of ``replaces.cls``.
    quantizes_activations: SmoothQuant applies (activations are quantized at run time).
    needs_input_ranges: activation ranges are calibrated (quantize() needs calibration data).
    check_float: ``check_float(name, float_module, config)``: a ValueError before any layer is replaced, for a
        float module this kind cannot quantize with this config.
    onnx: ``onnx(layer, site) -> (nodes, initializers)``: the integer ONNX nodes that replace the MatMul of the
        layer's float stand-in (a `OnnxSite` names the input, output and prefixes). None: no integer rewrite.
    onnx_stand_in: ``onnx_stand_in(layer) -> module``: what torch.onnx.export sees instead of the layer; None: a
        MatMul with the dequantized weight (``layer.dequantized_weight()``, ``bias``, optional ``input_smooth``),
        which `onnx` rewrites. A kind whose stand-in exports as is (the int8 embedding's Gather) gives only this.
        With neither `onnx` nor `onnx_stand_in`, the export refuses the layer, naming the kind.
    check_export: ``check_export(name, layer)``: a ValueError for a layer this kind cannot lower (int4 block size).
    """

    name: str
    module_cls: type[nn.Module]
    from_float: Callable[[nn.Module, Any, Calibration], nn.Module]
    describe: Callable[[nn.Module], dict[str, Any]]
    build: Callable[[Mapping[str, Any]], nn.Module]
    check_description: Callable[[str, Mapping[str, Any]], None]
    expected_tensors: Callable[[Mapping[str, Any]], ExpectedTensors]
    help: str
    replaces: FloatModule = LINEAR
    method: bool = True
    enabled: Callable[[Any], bool] | None = None
    quantizes_activations: bool = False
    needs_input_ranges: bool = False
    check_float: Callable[[str, nn.Module, Any], None] | None = None
    onnx: Callable[[nn.Module, OnnxSite], tuple[list, list]] | None = None
    onnx_stand_in: Callable[[nn.Module], nn.Module] | None = None
    check_export: Callable[[str, nn.Module], None] | None = None

    @property
    def exports(self) -> bool:
        """The ONNX export handles this kind (an integer rewrite or a stand-in that exports as is)."""
        return self.onnx is not None or self.onnx_stand_in is not None


class UnknownQuantizedKindError(UnknownNameError):
    """A quantized layer kind that is not registered; the message lists the registered ones."""


_REGISTRY: Registry[QuantizedKind] = Registry(
    "quantized kind",
    r"^[a-z][a-z0-9_]{0,47}$",
    "use 1-48 lower-case letters, digits or '_', starting with a letter",
    UnknownQuantizedKindError,
    lambda name, known: f"unknown quantized kind {name!r}; registered kinds: {known}",
)


def _check_spec(spec: QuantizedKind) -> None:
    if not isinstance(spec, QuantizedKind):
        raise TypeError(f"register_quantized_kind takes a QuantizedKind, got {type(spec).__name__}.")
    _REGISTRY.check_name(spec.name)
    if not (isinstance(spec.module_cls, type) and issubclass(spec.module_cls, nn.Module)):
        raise ValueError(
            f"quantized kind {spec.name!r}: module_cls must be an nn.Module class, got {spec.module_cls}."
        )
    if spec.method and not issubclass(spec.replaces.cls, nn.Linear):
        raise ValueError(
            f"quantized kind {spec.name!r}: a method kind replaces nn.Linear layers (quantize() selects Linear "
            f"layers by include / exclude), not {spec.replaces.cls.__name__}; register it with method=False and "
            "an `enabled` switch."
        )
    if not spec.method and spec.enabled is None:
        raise ValueError(f"quantized kind {spec.name!r}: a kind that is not a method needs `enabled(config)`.")


def register_quantized_kind(spec: QuantizedKind) -> QuantizedKind:
    """Register a quantized layer kind under ``spec.name``; a bad or duplicate name (or class) is a ValueError."""
    _check_spec(spec)
    _REGISTRY.check_new(spec.name)
    for other in _REGISTRY.values():
        if other.module_cls is spec.module_cls:
            raise ValueError(
                f"quantized kind {spec.name!r}: {spec.module_cls.__name__} is already the layer of kind "
                f"{other.name!r}; each kind has its own module class."
            )
    return _REGISTRY.add(spec.name, spec)


def unregister_quantized_kind(name: str) -> QuantizedKind:
    """Remove a registered kind (for tests and plugins that register one temporarily)."""
    return _REGISTRY.remove(name)


@contextlib.contextmanager
def registered_quantized_kind(spec: QuantizedKind) -> Iterator[QuantizedKind]:
    """``with registered_quantized_kind(spec):`` registers ``spec`` for the block only."""
    register_quantized_kind(spec)
    try:
        yield spec
    finally:
        unregister_quantized_kind(spec.name)


def get_quantized_kind(name: str) -> QuantizedKind:
    """The spec of quantized kind ``name``; `UnknownQuantizedKindError` lists the registered ones."""
    return _REGISTRY.get(name)


def quantized_kind_names() -> list[str]:
    return _REGISTRY.names()


def method_names() -> list[str]:
    """The registered kinds that are a `QuantizationConfig.method`."""
    return sorted(name for name, spec in _REGISTRY.entries.items() if spec.method)


def extra_kinds() -> list[QuantizedKind]:
    """The kinds that are not methods (switched on by a config field, e.g. int8 embeddings), by name."""
    return [_REGISTRY.get(name) for name in _REGISTRY.names() if not _REGISTRY.get(name).method]


def kind_of_module(module: nn.Module) -> QuantizedKind | None:
    """The kind whose layer ``module`` is (its exact class: a subclass may compute differently); None if none."""
    for spec in _REGISTRY.values():
        if type(module) is spec.module_cls:
            return spec
    return None


def is_quantized_module(module: nn.Module) -> bool:
    """``module`` is (an instance of a subclass of) a registered quantized layer."""
    return any(isinstance(module, spec.module_cls) for spec in _REGISTRY.values())
