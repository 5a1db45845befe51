"""Checks with one clear error each: what users hand to `quantize()`, and quantized checkpoints before they load.

Kept apart from apply.py / serialization.py so those stay about quantizing and loading. Every check raises a
``ValueError`` (``TypeError`` for a wrong kind of object) whose message names the field or module and the fix.
"""

from __future__ import annotations

import fnmatch
import logging
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from .config import CONFIG_VERSION, DEFAULT_METHOD, QuantizationConfig
from .kinds import get_quantized_kind, method_names, quantized_kind_names

logger = logging.getLogger(__name__)

REPAIR = "config.json does not match the weights (edited by hand, or mixed files?); re-save it with hf_compress."


# --------------------------------------------------------------------------------------------- quantize() inputs
def as_config(config: Any) -> QuantizationConfig:
    """None -> defaults; a `QuantizationConfig`; or a dict of its fields (plain or as written by ``to_dict``)."""
    if config is None:
        return QuantizationConfig()
    if isinstance(config, QuantizationConfig):
        return config
    if isinstance(config, Mapping):
        payload = dict(config)
        if "_type" not in payload:
            payload = {"_type": QuantizationConfig.__name__, "_version": CONFIG_VERSION, "_data": payload}
        return QuantizationConfig.from_dict(payload)
    raise TypeError(
        f"config must be a QuantizationConfig or a dict of its fields, got {type(config).__name__} ({config!r}); "
        f"e.g. QuantizationConfig(method={DEFAULT_METHOD!r})."
    )


def check_model(model: Any) -> None:
    if isinstance(model, PreTrainedModel):
        return
    hint = " Merge the adapters first (model.merge_and_unload())." if "peft" in type(model).__module__.lower() else ""
    raise TypeError(
        f"quantize() takes a transformers PreTrainedModel, got {type(model).__name__}: quantized models are saved "
        f"and reloaded through save_pretrained / from_pretrained, which a plain nn.Module does not have.{hint}"
    )


def check_batching(batch_size: Any, collate_fn: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if collate_fn is not None and not callable(collate_fn):
        raise TypeError(
            f"collate_fn must be a callable that batches rows (e.g. DataCollatorWithPadding(tokenizer)), "
            f"got {type(collate_fn).__name__}."
        )


def check_quantizable(linears: Mapping[str, nn.Module], config: QuantizationConfig) -> None:
    """Every selected layer suits the method's kind (int4: input width a multiple of group_size), checked before
    anything changes."""
    check = config.kind.check_float
    if check is not None:
        for name, linear in linears.items():
            check(name, linear, config)


def warn_unmatched_patterns(model: nn.Module, config: QuantizationConfig) -> None:
    """A glob that matches no module name is almost always a typo: say so, since it silently changes nothing."""
    names = [n for n, _ in model.named_modules() if n]
    fields = {"exclude": config.exclude, "keep_fp32": config.keep_fp32}
    if config.include != ["*"]:
        fields["include"] = config.include
    for field_name, patterns in fields.items():
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                effect = "selects nothing" if field_name == "include" else "keeps nothing in float"
                warnings.warn(
                    f"{field_name} pattern {pattern!r} matches no module of {type(model).__name__}, so it "
                    f"{effect} (module names look like {names[-1]!r}; globs match whole names, e.g. '*classifier*').",
                    UserWarning,
                    stacklevel=2,
                )


def check_finite_weights(modules: Mapping[str, nn.Module]) -> None:
    """NaN / inf in a float weight would vanish into a garbage integer code: refuse before quantizing."""
    for name, module in modules.items():
        for tensor_name in ("weight", "bias"):
            tensor = getattr(module, tensor_name, None)
            if isinstance(tensor, Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise ValueError(
                    f"{name}.{tensor_name} holds NaN or inf values: the float model is broken (diverged training?) "
                    "and quantizing would hide it; fix or reload the model, or exclude the layer."
                )


def split_calibration_data(data: Any) -> Any:
    """One batch dict -> a list with that batch; a DatasetDict -> an error asking for one split."""
    if not isinstance(data, Mapping):
        return data
    if data and all(hasattr(v, "column_names") for v in data.values()):
        raise ValueError(
            f"calibration_data is a DatasetDict with splits {sorted(data)}; pass one split, e.g. data['train']."
        )
    logger.info("calibration_data is one batch (a dict of model inputs): calibrating on that batch.")
    return [data]


def check_calibration_batch(model: nn.Module, batch: Mapping[str, Tensor], index: int) -> None:
    """Token ids inside the vocabulary, sequences within the position table, finite floats."""
    where = f"calibration batch {index}"
    config = getattr(model, "config", None)
    for key, value in batch.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{where}: {key} holds NaN or inf values; clean or re-preprocess the calibration data.")
    pixels = batch.get("pixel_values")
    if pixels is not None and not pixels.is_floating_point():
        raise ValueError(
            f"{where}: pixel_values are {pixels.dtype}, not floats; preprocess the images with the model's image "
            "processor (it rescales and normalizes them)."
        )
    ids = batch.get("input_ids")
    if ids is not None:
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise ValueError(f"{where}: input_ids must be integer token ids, got {ids.dtype}.")
        if ids.dim() != 2:
            raise ValueError(
                f"{where}: input_ids must be (batch, sequence), got shape {tuple(ids.shape)}; pass a list of "
                "tokenized rows or of batches (a single tokenizer('text') output is one row, not a batch)."
            )
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        vocab = getattr(embeddings, "num_embeddings", None) or getattr(config, "vocab_size", None)
        if ids.numel() and vocab is not None and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ValueError(
                f"{where}: input_ids range over [{int(ids.min())}, {int(ids.max())}] but the model's vocabulary "
                f"has {vocab} tokens (ids 0..{vocab - 1}); tokenize with the model's own tokenizer."
            )
        max_positions = getattr(config, "max_position_embeddings", None)
        if isinstance(max_positions, int) and ids.shape[-1] > max_positions:
            raise ValueError(
                f"{where}: sequences of {ids.shape[-1]} tokens exceed the model's max_position_embeddings="
                f"{max_positions}; truncate when tokenizing (truncation=True, max_length={max_positions})."
            )
    types = batch.get("token_type_ids")
    type_vocab = getattr(config, "type_vocab_size", None)
    if types is not None and types.numel() and isinstance(type_vocab, int) and int(types.max()) >= type_vocab:
        raise ValueError(
            f"{where}: token_type_ids go up to {int(types.max())} but the model has type_vocab_size={type_vocab}; "
            "tokenize with the model's own tokenizer."
        )


def check_finite_statistics(stats: Mapping[str, Mapping[str, Tensor]]) -> None:
    for name, entry in stats.items():
        if not all(torch.isfinite(v).all() for v in entry.values()):
            raise ValueError(
                f"The input of {name} is NaN or inf on the calibration data: the float model overflows there "
                "(check it with a forward pass); exclude the layer or fix the model."
            )


# ------------------------------------------------------------------------------------- checkpoint (config.json)
def positive_int_field(spec: Mapping[str, Any], key: str, name: str) -> int:
    """``spec[key]`` of the saved module ``name``, a positive integer (else a ValueError naming it)."""
    if key not in spec:
        raise ValueError(f"quantization_config.modules[{name!r}] has no {key!r}; {REPAIR}")
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"quantization_config.modules[{name!r}].{key} must be a positive integer, got {value!r}.")
    return value


def flag_field(spec: Mapping[str, Any], key: str, name: str, required: bool) -> None:
    """``spec[key]`` of the saved module ``name``, true or false (may be absent unless ``required``)."""
    if key not in spec and not required:
        return
    if not isinstance(spec.get(key), bool):
        raise ValueError(f"quantization_config.modules[{name!r}].{key} must be true or false, got {spec.get(key)!r}.")


def check_linear_description(name: str, spec: Mapping[str, Any]) -> None:
    """The fields every quantized Linear's saved description has: in / out features and bias."""
    positive_int_field(spec, "in_features", name)
    positive_int_field(spec, "out_features", name)
    flag_field(spec, "bias", name, required=True)


def validate_module_spec(name: str, spec: Any, method: str) -> None:
    """One ``modules`` entry of the saved quantization config: its kind and every field the loader needs."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"quantization_config.modules[{name!r}] must be a dict, got {spec!r}; {REPAIR}")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in quantized_kind_names():
        raise ValueError(
            f"Unknown quantized module kind {kind!r} for {name!r} in the checkpoint (known: "
            f"{quantized_kind_names()}); upgrade hf-compress, import the plugin that registers it, or re-save the "
            "model."
        )
    spec_kind = get_quantized_kind(kind)
    if spec_kind.method and kind != method:
        raise ValueError(f"quantization_config says method={method!r} but module {name!r} is {kind!r}; {REPAIR}")
    spec_kind.check_description(name, spec)


def validate_quantization_config(
    method: Any, modules: Any, user_config: Any, format_version: Any, latest: int
) -> None:
    """The ``quantization_config`` of a checkpoint, before anything is built from it."""
    if isinstance(format_version, bool) or not isinstance(format_version, int) or format_version < 1:
        raise ValueError(
            f"quantization_config.format_version must be a positive integer, got {format_version!r}; {REPAIR}"
        )
    if format_version > latest:
        raise ValueError(
            f"This checkpoint uses hf_compress quantization format {format_version}, newer than this "
            f"hf_compress understands ({latest}); upgrade hf-compress."
        )
    if not isinstance(method, str) or method not in method_names():
        raise ValueError(
            f"quantization_config.method={method!r} is not one of {method_names()}: upgrade hf-compress or import the "
            f"plugin that registers it (if the name is a typo: {REPAIR})"
        )
    if not isinstance(modules, Mapping):
        raise ValueError(f"quantization_config.modules must be a dict of module specs, got {modules!r}; {REPAIR}")
    for name, spec in modules.items():
        validate_module_spec(name, spec, method)
    if user_config:
        try:
            user = QuantizationConfig.from_dict(dict(user_config))
        except (ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"quantization_config.user_config is invalid: {err}") from err
        if user.method != method:
            raise ValueError(
                f"quantization_config.method={method!r} but user_config says method={user.method!r}; {REPAIR}"
            )


def _key_renamer(model: nn.Module):
    """The checkpoint-key -> module-name renaming that transformers applies when it loads (e.g. ViT's
    ``encoder.layer.0.attention.attention.key`` -> ``layers.0.attention.k_proj``); identity if unavailable."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

        mapping = get_model_conversion_mapping(model, None, None)
    except Exception as err:  # an internal transformers API: fall back to the names as saved
        logger.debug("No checkpoint key renaming (%s); checking the tensors under their saved names.", err)
        return lambda key: key
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    return lambda key: rename_source_key(key, renamings, converters)[0]


def checkpoint_tensors(
    checkpoint_files: list[str] | None, model: nn.Module
) -> dict[str, tuple[tuple[int, ...], str]] | None:
    """Module-name key -> (shape, safetensors dtype) from the file headers (no tensor data is read); None when
    the checkpoint is not safetensors."""
    if not checkpoint_files or not all(str(f).endswith(".safetensors") for f in checkpoint_files):
        return None
    from safetensors import SafetensorError, safe_open

    rename = _key_renamer(model)
    tensors = {}
    for path in checkpoint_files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    piece = handle.get_slice(key)
                    tensors[rename(key)] = (tuple(piece.get_shape()), piece.get_dtype())
        except SafetensorError as err:
            raise OSError(
                f"{path} is not a readable safetensors file ({err}): it is truncated or corrupt (an interrupted "
                "save, copy or download?); save the model again, or copy / download the folder again."
            ) from err
    return tensors


_SAFETENSORS_DTYPES = {torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16", torch.int32: "I32", torch.int64: "I64"}


def check_checkpoint_tensors(modules: Mapping[str, Mapping[str, Any]], tensors: Mapping[str, tuple]) -> None:
    """The tensors in the file are exactly those the quantization config describes (so a tampered or mismatched
    config.json, e.g. ``smooth: false`` for smoothed weights or static <-> dynamic, fails instead of loading wrong)."""
    for name, spec in modules.items():
        expected = get_quantized_kind(spec["kind"]).expected_tensors(spec)
        found = {
            k[len(name) + 1 :]: v
            for k, v in tensors.items()
            if k.startswith(name + ".") and "." not in k[len(name) + 1 :]
        }
        missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"The checkpoint's tensors for {name!r} ({sorted(found)}) do not match its quantization_config entry "
                f"{dict(spec)} (missing {missing}, unexpected {unexpected}); {REPAIR}"
            )
        for suffix, (shape, dtype) in expected.items():
            file_shape, file_dtype = found[suffix]
            wrong_dtype = (
                file_dtype in _SAFETENSORS_DTYPES.values()
                if dtype is None
                else file_dtype != _SAFETENSORS_DTYPES[dtype]
            )
            if tuple(file_shape) != shape or wrong_dtype:
                raise ValueError(
                    f"The checkpoint's {name}.{suffix} is {file_dtype} {list(file_shape)}, but its "
                    f"quantization_config entry {dict(spec)} needs shape {list(shape)}; {REPAIR}"
                )
    quantized = {
        k.rpartition(".")[0] for k, (_, dtype) in tensors.items() if dtype in ("I8", "U8") and k.endswith(".weight")
    }
    unlisted = sorted(quantized - set(modules))
    if unlisted:
        raise ValueError(
            f"The checkpoint holds integer weights for {unlisted}, not listed in its quantization_config; {REPAIR}"
        )


def check_against_float_module(name: str, spec: Mapping[str, Any], module: nn.Module) -> None:
    """The module the model's config builds has the checkpoint's shape (``from_pretrained(num_labels=3)`` on a
    2-label quantized checkpoint must fail as it does for a float one, not load 2 logits under a 3-label config)."""
    replaces = get_quantized_kind(spec["kind"]).replaces
    if not replaces.matches(spec, module):
        raise ValueError(
            f"The quantized checkpoint stores {name!r} as {replaces.describe(spec)}, but the model built from this "
            "config has "
            f"{module}: a quantized checkpoint cannot be reshaped at load time (e.g. by num_labels=...); load it "
            "without overriding its config, or change the float model and quantize it again."
        )
