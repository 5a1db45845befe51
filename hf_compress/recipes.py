"""YAML recipes -> typed, validated stage configs. Strict: an unknown key, a wrong type or an unknown method is
an error that lists what is valid. The resolved recipe (defaults filled in) is saved with every output.

A recipe::

    name: quickstart
    seed: 0
    teacher: {source: demo-minilm}                  # demo-minilm | a local directory | a Hub id | config
    data: {source: demo-rotten-tomatoes, train_limit: 2000, max_length: 64}
    stages:
      - {method: finetune, num_train_epochs: 1}
      - {method: homodistil, target_hidden_size: 192, target_num_heads: 6, target_intermediate_size: 768}
      - {method: quantize, quant_method: int8_dynamic}    # QuantizationConfig fields; quant_method = its method
      - {method: evaluate}
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .stages import StageSpec, UnknownStageError, get_stage, stage_names
from .validation import (
    RecipeError,
    check_data,
    check_name,
    check_seed,
    check_stage_order,
    check_teacher,
    check_training_fields,
    redact,
)

TASKS = ("text-classification", "image-classification")
STAGE_KEYS = ("method", "name")  # every stage; the rest are the method's fields (+ its extras below)


@dataclass
class ModelSpec:
    """The teacher: ``demo-minilm`` (packaged MiniLM-L6), a local directory, a Hub id, or ``config`` (a new model
    built from ``config``, e.g. a small ViT trained from scratch by a finetune stage)."""

    source: str = "demo-minilm"
    config: dict | None = None  # with source: config -> {model_type: vit, hidden_size: ..., ...}
    num_labels: int | None = None  # default: from the data's label column
    # A teacher with a classification head: "names" matches the data's label names to the head's id2label (and
    # refuses names that differ); "index" trusts that the data's class i is the head's class i.
    label_order: str = "names"


@dataclass
class DataSpec:
    """The data: a demo set, local files (``files: {train: a.csv, validation: b.csv}``) or a Hub dataset id."""

    source: str = "demo-rotten-tomatoes"
    files: dict | None = None  # split -> path (csv / json / jsonl / parquet), with source: files
    config_name: str | None = None  # Hub dataset configuration, e.g. sst2 for glue
    task: str = "text-classification"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    image_column: str = "image"
    train_split: str = "train"
    eval_split: str = "validation"
    test_split: str | None = "test"
    max_length: int = 128
    train_limit: int | None = None
    eval_limit: int | None = None
    test_limit: int | None = None
    metric: str = "accuracy"  # shipped: accuracy, f1, mse; any other name needs trust_remote_metric
    trust_remote_metric: bool = False  # allow evaluate.load of a metric that is not shipped (it runs its code)


@dataclass
class Stage:
    method: str
    name: str
    fields: dict[str, Any]
    extras: dict[str, Any]

    @property
    def spec(self) -> StageSpec:
        """What this stage type is (trains, quantizes, how it runs): its registration in `hf_compress.stages`."""
        return get_stage(self.method)

    def config(self, output_dir: str) -> Any:
        """The typed config object of this stage (its TrainingArguments get ``output_dir``)."""
        return self.spec.config({**self.spec.defaults, **self.fields}, self.extras, output_dir)


@dataclass
class Recipe:
    name: str
    teacher: ModelSpec
    data: DataSpec
    stages: list[Stage]
    seed: int = 0
    source_path: str | None = None
    auto: dict | None = None  # the `auto:` section: `hf-compress auto`'s search settings (`auto.SearchConfig`)

    def resolved(self) -> dict[str, Any]:
        """The recipe as it runs: every stage with its method defaults filled in (saved with the outputs);
        secrets (``hub_token``, ...) redacted."""
        return redact(
            {
                "name": self.name,
                "seed": self.seed,
                "teacher": dataclasses.asdict(self.teacher),
                "data": dataclasses.asdict(self.data),
                "stages": [
                    {"method": s.method, "name": s.name, **s.spec.defaults, **s.fields, **s.extras}
                    for s in self.stages
                ],
            }
        )


_INTERNAL = {"output_dir"}  # set by the runner, never by a recipe


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string (it wants ``1.0e-4``); learning rates are written that way, so
    scientific notation without a dot is read as a float too."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


# A recipe is a few hundred values; anchors that expand past this many nodes are an alias bomb (a few hundred bytes
# of `&a [*b, *b, ...]` expand to billions of nodes), refused before anything is built from them.
MAX_EXPANDED_NODES = 100_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int], path: set[int]) -> int:
    """Nodes in ``node`` with every alias expanded, memoised per node (so counting is linear in the document);
    a node that contains itself (``&a [*a]``) is an error."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in path:
        mark = node.start_mark
        raise RecipeError(
            f"YAML line {mark.line + 1}: an anchor refers to itself (e.g. `a: &x [*x]`), which has no finite value; "
            "write the value out."
        )
    path.add(key)
    children = node.value if isinstance(node, yaml.SequenceNode) else []
    if isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, path)
        if total > MAX_EXPANDED_NODES:
            break
    path.discard(key)
    sizes[key] = total
    return total


def _check_duplicate_keys(node: yaml.Node, seen: set[int]) -> None:
    """YAML lets a later ``key:`` silently replace an earlier one; a recipe with a key twice is refused."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in keys:
                    raise RecipeError(
                        f"YAML line {key_node.start_mark.line + 1}: key {key_node.value!r} appears twice in one "
                        f"mapping (first on line {keys[key_node.value]}); YAML would silently keep the last one. "
                        "Keep one."
                    )
                keys[key_node.value] = key_node.start_mark.line + 1
            _check_duplicate_keys(value_node, seen)
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _check_duplicate_keys(child, seen)


def load_yaml(text: str):
    """Parse a recipe (or a ``--set`` value): a key given twice, an anchor that refers to itself and anchors that
    expand beyond `MAX_EXPANDED_NODES` are `RecipeError`s, raised before any value is built."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise RecipeError(
                "The YAML nests too deeply to read (hundreds of levels of [ or {); a recipe needs a few."
            ) from None
        if node is None:
            return None
        try:
            size = _expanded_size(node, {}, set())
        except RecursionError:
            raise RecipeError("The YAML nests too deeply to read; a recipe needs a few levels.") from None
        if size > MAX_EXPANDED_NODES:
            raise RecipeError(
                f"The YAML expands to more than {MAX_EXPANDED_NODES:,} values through its anchors and aliases (an "
                "alias bomb?); a recipe needs a few hundred. Write the values out or use fewer aliases."
            )
        _check_duplicate_keys(node, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _simple(tp: Any) -> tuple[type, ...] | None:
    """The Python types a YAML value may have for annotation ``tp`` (None = do not check)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        parts = [_simple(a) for a in typing.get_args(tp) if a is not type(None)]
        if any(p is None for p in parts):
            return None
        return tuple(t for p in parts for t in p) + (type(None),)
    if tp is bool:
        return (bool,)
    if tp is int:
        return (int,)
    if tp is float:
        return (int, float)
    if tp is str:
        return (str,)
    if tp is list or origin is list:
        return (list,)
    if tp is dict or origin is dict:
        return (dict,)
    return None


def _check_fields(where: str, values: dict[str, Any], types_: dict[str, Any]) -> None:
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}. Valid keys: {sorted(types_)}.")
    for key, value in values.items():
        allowed = _simple(types_[key])
        if allowed is None:
            continue
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not ok:
            names = " or ".join(sorted({t.__name__ for t in allowed if t is not type(None)}))
            raise RecipeError(f"{where}: {key} must be {names}, got {type(value).__name__} {value!r}.")


def _section(raw: dict, key: str, cls: type, where: str) -> Any:
    values = raw.get(key) or {}
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: '{key}' must be a mapping, got {type(values).__name__}.")
    _check_fields(f"{where} {key}", values, _field_types(cls))
    return cls(**values)


def parse_recipe(raw: dict, source_path: str | None = None) -> Recipe:
    """Validate a recipe dict (from YAML) into a `Recipe`; every stage config is built once to check it."""
    where = f"recipe {source_path}" if source_path else "recipe"
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: the top level must be a mapping with teacher, data and stages.")
    top = {"name": str, "seed": int, "teacher": dict, "data": dict, "stages": list, "auto": dict}
    _check_fields(where, raw, top)
    check_name(where, "recipe name", raw.get("name", "recipe"))
    check_seed(where, raw.get("seed", 0))
    teacher = _section(raw, "teacher", ModelSpec, where)
    data = _section(raw, "data", DataSpec, where)
    if data.task not in TASKS:
        raise RecipeError(f"{where} data: task={data.task!r} is not supported; choose one of {list(TASKS)}.")
    if data.source == "files" and not data.files:
        raise RecipeError(f"{where} data: source 'files' needs files: {{train: path, validation: path}}.")
    check_data(where, data)
    check_teacher(where, teacher, data.task)
    auto = _auto_section(where, raw.get("auto"))
    raw_stages = raw.get("stages") or []
    if not raw_stages and auto is not None:
        # a search recipe needs no stage of its own: a measurements-only one stands in
        raw_stages = [{"method": next(n for n in stage_names() if get_stage(n).run is None)}]
    if not raw_stages:
        raise RecipeError(f"{where}: 'stages' is empty; list at least one stage (methods: {stage_names()}).")
    stages, names = [], set()
    for index, raw_stage in enumerate(raw_stages):
        stage_where = f"{where} stage {index}"
        if not isinstance(raw_stage, dict) or "method" not in raw_stage:
            raise RecipeError(f"{stage_where}: each stage is a mapping with a 'method' ({stage_names()}).")
        method = raw_stage["method"]
        try:
            spec = get_stage(method)
        except UnknownStageError as err:
            raise RecipeError(f"{stage_where}: {err}.") from None
        cls, extra_types = spec.config_cls, spec.extras
        name = check_name(stage_where, "stage name", raw_stage.get("name", method))
        if name in names:
            raise RecipeError(f"{stage_where}: stage name {name!r} is used twice; give each stage a unique name.")
        names.add(name)
        body = {k: v for k, v in raw_stage.items() if k not in STAGE_KEYS}
        field_types = {k: v for k, v in (_field_types(cls) if cls else {}).items() if k not in _INTERNAL}
        _check_fields(f"{stage_where} ({method})", body, {**field_types, **extra_types})
        fields = {k: v for k, v in body.items() if k in field_types}
        extras = {k: v for k, v in body.items() if k in extra_types}
        if spec.check_extras is not None:
            spec.check_extras(f"{stage_where} ({method})", extras)
        if spec.trains:
            check_training_fields(f"{stage_where} ({method})", fields)
        stage = Stage(method=method, name=name, fields=fields, extras=extras)
        try:
            stage.config(output_dir=str(Path("/nonexistent") / name))
        except RecipeError:
            raise
        except (ValueError, TypeError) as err:
            raise RecipeError(f"{stage_where} ({method}): {err}") from err
        stages.append(stage)
    check_stage_order(where, stages)
    return Recipe(name=str(raw.get("name", "recipe")), teacher=teacher, data=data, stages=stages,
                  seed=int(raw.get("seed", 0)), source_path=source_path, auto=auto)  # fmt: skip


def _auto_section(where: str, values: Any) -> dict | None:
    """The `auto:` section, checked against `auto.SearchConfig` (unknown keys and bad values are errors)."""
    if values is None:
        return None
    from .auto.config import SearchConfig

    if not isinstance(values, dict):
        raise RecipeError(f"{where}: 'auto' must be a mapping of search settings, got {type(values).__name__}.")
    _check_fields(f"{where} auto", values, _field_types(SearchConfig))
    if any(values.get(k) is not None for k in ("max_drop", "min_speedup", "max_latency_ms")):
        try:
            SearchConfig(**values)
        except (ValueError, TypeError) as err:
            raise RecipeError(f"{where} auto: {err}") from err
    return dict(values)


def _parse_value(item: str, text: str) -> Any:
    try:
        return load_yaml(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or type(err).__name__
        raise RecipeError(
            f"--set {item!r}: the value is not valid YAML ({problem}); quote it, e.g. --set 'key=\"[text\"'."
        ) from err


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``--set path=value`` overrides: ``data.max_length=64``, ``stages.homodistil.max_steps=100`` (a stage by
    name or index). Values are YAML (``3``, ``1e-4``, ``[0, 2]``, ``true``)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected path=value, e.g. stages.distill.max_steps=100.")
        path, value = item.split("=", 1)
        keys = path.strip().split(".")
        target = raw
        for i, key in enumerate(keys[:-1]):
            if isinstance(target, list):
                match = [s for s in target if isinstance(s, dict) and s.get("name", s.get("method")) == key]
                if key.isdigit() and int(key) < len(target):
                    target = target[int(key)]
                elif len(match) == 1:
                    target = match[0]
                else:
                    names = [s.get("name", s.get("method")) if isinstance(s, dict) else s for s in target]
                    raise RecipeError(
                        f"--set {item!r}: no single stage {key!r}; stages are {names} (or 0..{len(target) - 1})."
                    )
            elif isinstance(target, dict):
                target = target.setdefault(key, {}) if i < len(keys) - 1 else target
            else:
                raise RecipeError(f"--set {item!r}: {'.'.join(keys[:i])} is not a mapping.")
        if not isinstance(target, dict):
            raise RecipeError(f"--set {item!r}: {'.'.join(keys[:-1])} is not a mapping.")
        target[keys[-1]] = _parse_value(item, value)
    return raw


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe {path} does not exist.")
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path}: not valid YAML ({err}).") from err
    except RecipeError as err:
        raise RecipeError(f"recipe {path}: {err}") from err
    return parse_recipe(apply_overrides(raw or {}, overrides or []), source_path=str(path))
