"""Model cards: a README.md with Hub metadata and the measured numbers of a stage against its teacher."""

from __future__ import annotations

from pathlib import Path

import yaml

from .evaluation import control_summary, format_speedup
from .recipes import Recipe, Stage
from .validation import public

_TAGS = {"finetune": ["fine-tuned"], "distill": ["distillation"], "homodistil": ["pruning", "distillation"],
         "prune": ["pruning", "distillation"], "quantize": ["quantization"]}  # fmt: skip


def _model_index(recipe: Recipe, stage: Stage, record: dict, dataset: str) -> list[dict]:
    """The Hub's ``model-index``: the measured metric on the recipe's test split, shown on the model page."""
    data, metric = recipe.data, recipe.data.metric
    split = data.test_split or data.eval_split
    dataset_entry = {"name": dataset, "type": dataset, "split": split}
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


def write_model_card(
    recipe: Recipe, stage: Stage, record: dict, teacher: dict, base_model: str | None, root: Path | None = None
) -> str:
    """The README.md of a stage output; ``root`` (the output folder) makes local paths relative, secrets are
    redacted, and no absolute local path is written."""
    metric = recipe.data.metric
    task = recipe.data.task
    dataset = public(recipe.data.source, root)
    source = public(recipe.teacher.source, root)
    base_model = public(base_model, root) if base_model else None
    metadata = {
        "library_name": "transformers",
        "pipeline_tag": task,
        "tags": ["hf-compress", *_TAGS.get(stage.method, [])],
        "datasets": [dataset],
        "metrics": [metric],
    }
    if base_model and recipe.teacher.source == base_model and not Path(base_model).exists():  # a Hub id
        metadata["base_model"] = base_model
    elif recipe.teacher.source == "demo-minilm":
        metadata["base_model"] = base_model
    metadata["model-index"] = _model_index(recipe, stage, record, dataset)
    quantized = stage.method == "quantize"
    load = (
        "import hf_compress  # registers the 'hf_compress' quantization: required to load this checkpoint\n"
        if quantized
        else ""
    )
    auto = "AutoModelForSequenceClassification" if task == "text-classification" else "AutoModelForImageClassification"
    rows = [
        ("metric", f"{metric}", f"{metric}"),
        (metric, f"{teacher[metric]:.4f}", f"{record[metric]:.4f}"),
        ("params (M)", f"{teacher['params_m']:.2f}", f"{record['params_m']:.2f}"),
        ("size on disk (MB)", f"{teacher['size_mb']:.1f}", f"{record['size_mb']:.1f}"),
        (
            "latency 8x128 (ratio to teacher)",
            "1.00",
            format_speedup(record["latency_8x128"], record.get("latency_control_8x128"), False),
        ),
        (
            "latency 1x128 (ratio to teacher)",
            "1.00",
            format_speedup(record["latency_1x128"], record.get("latency_control_1x128"), False),
        ),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows[1:])
    stage_yaml = yaml.safe_dump(public(recipe.resolved(), root), sort_keys=False)
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---

# {recipe.name}: stage `{stage.name}` ({stage.method})

Made with [hf_compress](https://pypi.org/project/hf-compress/) from `{base_model or source}` on
`{dataset}`. Measured on the recipe's test split; latency is the median of interleaved runs against
the teacher in one process (CPU, random inputs of the stated batch x sequence length); a ratio below 1 is faster.
{control_summary([record])}

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
