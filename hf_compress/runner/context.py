"""What the stages of one recipe run share: the recipe, the data, the processor, the teacher and the current model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import DatasetDict

from ..recipes import Recipe

# classification heads: a teacher whose architecture ends so has class names (config.id2label) that mean something
HEADS = ("ForSequenceClassification", "ForImageClassification")


@dataclass
class Context:
    recipe: Recipe
    output_dir: Path
    data: DatasetDict | None = None
    processor: Any = None
    collator: Any = None
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    teacher: Any = None  # the current teacher (after a finetune stage: the fine-tuned model)
    teacher_dir: str | None = None
    teacher_config: Any = None  # the saved config of a teacher loaded from a folder or the Hub
    current: Any = None  # the model the next stage compresses
    current_dir: str | None = None
    results: list[dict] = field(default_factory=list)
