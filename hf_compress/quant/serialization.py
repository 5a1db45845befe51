"""The `from_pretrained` round trip: a registered quantization config and quantizer named ``hf_compress``.

`quantize()` records which module became which quantized layer in ``config.quantization_config``; on
`from_pretrained`, the registered quantizer replaces exactly those modules with empty quantized layers before
the weights are read, so the integer tensors load straight into them (no float copy of the model is made).

Without ``import hf_compress``, transformers only warns that it does not know ``hf_compress`` and would build the
float model, and ``ignore_mismatched_sizes=True`` would let it fill the integer tensors' layers with random
weights. So every saved ``config.json`` carries a guard (`PLUGIN_REQUIRED` in ``experts_implementation``):
transformers checks that field whenever it builds a model, before it reads any weight, and raises with the value
in its message, whatever the loading flags. The registered quantizer clears the guard before the model is built
(`HfCompressQuantizer.update_attn_implementation`), so only loads without hf_compress stop there.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from .config import DEFAULT_METHOD
from .kinds import get_quantized_kind
from .validation import (
    check_against_float_module,
    check_checkpoint_tensors,
    checkpoint_tensors,
    validate_quantization_config,
)

QUANT_METHOD = "hf_compress"
FORMAT_VERSION = 1
# A buffer saved with every quantized checkpoint. Should a load without hf_compress get past the guard below (a
# config.json written before it), transformers lists it as an unexpected key in its load report, so the report
# itself says what to do. The guard's message starts with it too.
MARKER = "hf_compress_quantized__to_load_run_pip_install_hf_compress_then_import_hf_compress"


# The guard: a value that transformers refuses for ``experts_implementation`` when it builds any model (ValueError
# 'Specified `experts_implementation="..."` is not supported'), naming the fix. Written by save_pretrained (via
# `HfCompressQuantizer.get_state_dict_and_metadata`), read back into ``config._experts_implementation``.
GUARD_FIELD = "experts_implementation"
PLUGIN_REQUIRED = (
    f"{MARKER} (this checkpoint is quantized with hf-compress and loads only through from_pretrained with "
    "hf_compress imported: run `pip install hf-compress`, then `import hf_compress` before from_pretrained; "
    "with it imported, use from_pretrained, not from_config: a model built from this config alone would be a "
    "float model without the quantized weights)"
)


def add_marker(model: nn.Module) -> None:
    model.register_buffer(MARKER, torch.ones(1, dtype=torch.int8))


@register_quantization_config(QUANT_METHOD)
class HfCompressQuantizationConfig(QuantizationConfigMixin):
    """What is stored in ``config.json``: the method, each quantized module's kind, and the user's config."""

    def __init__(
        self,
        method: str = DEFAULT_METHOD,
        modules: dict[str, dict[str, Any]] | None = None,
        user_config: dict[str, Any] | None = None,
        format_version: int = FORMAT_VERSION,
        **kwargs: Any,
    ) -> None:
        validate_quantization_config(method, modules or {}, user_config, format_version, FORMAT_VERSION)
        self.quant_method = QUANT_METHOD
        self.method = method
        self.modules = modules or {}
        self.user_config = user_config or {}
        self.format_version = format_version

    def to_dict(self) -> dict[str, Any]:
        return {
            "quant_method": QUANT_METHOD,
            "method": self.method,
            "modules": self.modules,
            "user_config": self.user_config,
            "format_version": self.format_version,
        }


def module_description(kind: str, module: nn.Module) -> dict[str, Any]:
    """The ``config.json`` entry of a quantized module: its kind and what the kind records to rebuild it."""
    return {"kind": kind, **get_quantized_kind(kind).describe(module)}


def build_quantized_module(spec: dict[str, Any]) -> nn.Module:
    """An empty quantized module from its ``config.json`` entry (validated by `validate_module_spec` first)."""
    return get_quantized_kind(spec["kind"]).build(spec)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@register_quantizer(QUANT_METHOD)
class HfCompressQuantizer(HfQuantizer):
    """Loads checkpoints written by `hf_compress.quantize` + `save_pretrained`; it does not quantize float models."""

    requires_calibration = True  # only pre-quantized checkpoints: quantize with hf_compress.quantize()

    def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
        modules = self.quantization_config.modules
        tensors = checkpoint_tensors(checkpoint_files, model)
        if tensors is not None:
            check_checkpoint_tensors(modules, tensors)
        add_marker(model)
        for name, spec in modules.items():
            try:
                current = model.get_submodule(name)
            except AttributeError as err:
                raise ValueError(
                    f"The quantized checkpoint names module {name!r}, which this model class does not have: load it "
                    f"with the class it was saved from ({model.config.architectures})."
                ) from err
            check_against_float_module(name, spec, current)
            replace_module(model, name, build_quantized_module(spec))
        return model

    def update_attn_implementation(self, config):
        """from_pretrained calls this with the checkpoint's config before it builds the model: lift the guard that
        stops loads without hf_compress (an ``experts_implementation`` the caller asked for is kept)."""
        if getattr(config, "_experts_implementation", None) == PLUGIN_REQUIRED:
            config._experts_implementation = None
        return config

    def _process_model_after_weight_loading(self, model, **kwargs):
        return model.eval()

    def get_state_dict_and_metadata(self, model):
        """save_pretrained calls this before it writes config.json: the saved config carries the guard (a plain
        attribute that the in-memory model ignores; only a config read back from JSON holds it where it counts)."""
        setattr(model.config, GUARD_FIELD, PLUGIN_REQUIRED)
        return None, {}

    def is_serializable(self, *args, **kwargs) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False
