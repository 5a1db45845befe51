"""The ``quantize`` stage: `hf_compress.quantize` of the current model (last in a recipe: nothing trains after it).
Its quantization method is the recipe key ``quant_method`` (``method`` names the stage)."""

from __future__ import annotations

import copy

from ..quant import QuantizationConfig, quantize
from ..quant.config import DEFAULT_METHOD
from ..validation import RecipeError
from .registry import StageSpec, register_stage


def build_config(values: dict, extras: dict, output_dir: str) -> QuantizationConfig:
    return QuantizationConfig(**values, method=extras.get("quant_method", DEFAULT_METHOD))


def check_extras(where: str, extras: dict) -> None:
    if "calibration_samples" in extras and extras["calibration_samples"] < 1:
        raise RecipeError(f"{where}: calibration_samples must be >= 1, got {extras['calibration_samples']}.")


def run(ctx, stage, work_dir):
    config = stage.config(str(work_dir))
    train = ctx.data["train"]
    calibration = train.select(range(min(stage.extras.get("calibration_samples", 256), len(train))))
    model = copy.deepcopy(ctx.current)
    return quantize(model, config, calibration if config.needs_calibration else None, collate_fn=ctx.collator)


register_stage(StageSpec(
    name="quantize", config_cls=QuantizationConfig, run=run, build_config=build_config, quantizes=True,
    extras={"quant_method": str, "calibration_samples": int}, check_extras=check_extras,
    card_tags=("quantization",), method_alias="quant_method", help="quantize the current model",
))  # fmt: skip
