"""The recipe side of ViT / DeiT students: a distill stage's ``student: {type: vit, ...}``, validated at parse time
and built from the teacher (a copy of some of its layers) or from a config (a new student, any teacher).

    - method: distill
      student: {type: vit, distillation_token: true,          # DeiT's student: class + distillation heads
                config: {image_size: 28, patch_size: 4, num_channels: 1, hidden_size: 128,
                         num_hidden_layers: 3, num_attention_heads: 4, intermediate_size: 512}}
      kd_loss_type: hard
      kd_weight: 0.5
      hard_label_weight: 0.5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import AutoModelForImageClassification, PreTrainedModel

from .deit_student import make_deit_student
from .student import make_student

CONFIG_TYPES = ("vit", "deit")


@dataclass
class ViTStudentSpec:
    """``type: vit``: a ViT student (``distillation_token: true``: DeiT's two-head student).

    ``config``: the student's shape (a ViT / DeiT config's keys; ``model_type`` vit or deit, default vit); the
    labels come from the teacher. Without ``config`` the student copies the teacher (a ViT / DeiT), keeping the
    stage's ``student_layers`` (default: all).
    """

    type: str = "vit"
    distillation_token: bool = True
    config: dict | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.distillation_token, bool):
            raise ValueError(f"student.distillation_token must be true or false, got {self.distillation_token!r}.")
        if self.config is not None:
            self.model_config()  # every key and value checked now, not after the teacher has trained

    def model_config(self, labels: dict[str, Any] | None = None):
        if not isinstance(self.config, dict):
            raise ValueError(f"student.config must be a mapping of ViT config keys, got {self.config!r}.")
        from ..validation import checked_config  # (the recipe layer's config vocabulary)

        values = dict(self.config)
        model_type = values.pop("model_type", "vit")
        if model_type not in CONFIG_TYPES:
            raise ValueError(f"student.config.model_type must be one of {list(CONFIG_TYPES)}, got {model_type!r}.")
        return checked_config("student.config", model_type, values, **(labels or {}))

    def build(self, teacher: PreTrainedModel, layers: list[int] | None = None) -> PreTrainedModel:
        if self.config is None:
            if teacher.config.model_type not in CONFIG_TYPES:
                raise ValueError(
                    f"student: {{type: vit}} without a config copies the teacher, but the teacher is a "
                    f"{teacher.config.model_type} model; give student.config (the ViT's shape) to distil a "
                    "new ViT from it."
                )
            if self.distillation_token:
                return make_deit_student(teacher, layers)
            return make_student(teacher, layers or list(range(teacher.config.num_hidden_layers)))
        labels = {
            "num_labels": teacher.config.num_labels,
            "id2label": dict(teacher.config.id2label),
            "label2id": dict(teacher.config.label2id),
        }
        config = self.model_config(labels)
        if self.distillation_token:
            return make_deit_student(config)
        return AutoModelForImageClassification.from_config(config)
