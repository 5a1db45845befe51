"""One registration per recipe stage type, as PEFT's ``register_peft_method`` does for methods: a `StageSpec` says
what the stage's config is, which extra recipe keys it takes, how it runs and what it is (trains, quantizes, becomes
the teacher), and recipes, the runner, model cards and the CLI ask the registry instead of naming stages.

A new stage type is one module that builds a `StageSpec` and calls `register_stage`, imported once in
``hf_compress/stages/__init__.py``, plus its test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..registry import Registry, UnknownNameError


@dataclass(frozen=True)
class StageSpec:
    """What the rest of hf_compress needs to know about a stage type.

    run: ``run(ctx, stage, work_dir) -> model``: the runner's context (teacher, current model, data, collator,
        processor), the parsed `recipes.Stage` and the stage's ``.work`` folder; None for a stage that only
        measures (no output folder).
    build_config: ``build_config(values, extras, output_dir) -> config``; default ``config_cls(output_dir=...,
        **values)`` (a TrainingArguments subclass) or ``config_cls(**values)``.
    check_extras: ``check_extras(where, extras)``, raising `validation.RecipeError` for a bad extra value.
    note: ``note(model) -> str``: a sentence about the stage's output that its model card and the run's summary
        carry (what was measured about it, what it does not do), or None.
    """

    name: str
    config_cls: type | None
    run: Callable[..., Any] | None
    help: str
    extras: dict[str, type] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    trains: bool = False  # trains a model: checkpoints in .work (a killed run resumes), never after a quantize stage
    quantizes: bool = False  # writes a quantized model: nothing trains or quantizes after it
    becomes_teacher: bool = False  # its output is the teacher of every later stage (a fine-tuned teacher)
    learns_from_teacher: bool = False  # the model card names the teacher it was distilled from
    card_tags: tuple[str, ...] = ()
    build_config: Callable[[dict, dict, str], Any] | None = None
    check_extras: Callable[[str, dict], None] | None = None
    takes_model: bool = False  # the single-stage CLI command reads --model (the model it measures)
    method_alias: str | None = None  # in a single-stage config, `method: X` means this extra key (quant_method: X)
    note: Callable[[Any], str] | None = None

    def config(self, values: dict[str, Any], extras: dict[str, Any], output_dir: str) -> Any:
        """The typed config of one stage of a recipe (None for a stage without one)."""
        if self.build_config is not None:
            return self.build_config(values, extras, output_dir)
        if self.config_cls is None:
            return None
        if "output_dir" in getattr(self.config_cls, "__dataclass_fields__", {}):
            return self.config_cls(output_dir=output_dir, **values)
        return self.config_cls(**values)


class UnknownStageError(UnknownNameError):
    """A stage type that is not registered; the message lists the registered ones."""


_REGISTRY: Registry[StageSpec] = Registry(
    "stage",
    r"^[a-z][a-z0-9_-]{0,31}$",
    "use 1-32 lower-case letters, digits, '_' or '-', starting with a letter",
    UnknownStageError,
    lambda name, known: f"unknown method {name!r}; valid methods: {known}",
)


def register_stage(spec: StageSpec) -> StageSpec:
    """Register a stage type under ``spec.name``; a bad or duplicate name is a ValueError."""
    if not isinstance(spec, StageSpec):
        raise TypeError(f"register_stage takes a StageSpec, got {type(spec).__name__}.")
    _REGISTRY.check_name(spec.name)
    if spec.trains and spec.quantizes:
        raise ValueError(f"stage {spec.name!r}: a stage either trains or quantizes (train first, quantize last).")
    return _REGISTRY.add(spec.name, spec)


def get_stage(name: str) -> StageSpec:
    """The spec of stage type ``name``; `UnknownStageError` lists the registered ones."""
    return _REGISTRY.get(name)


def stage_names() -> list[str]:
    return _REGISTRY.names()
