"""The recipe side of RNN students and transfer sets: the ``distill`` stage's ``student``, ``augment`` and
``cache_teacher_logits`` keys, validated strictly at parse time and turned into a student and a train set
(``student: {type: vit}``, a ViT / DeiT student, is `vit_stage.ViTStudentSpec`).

    - method: distill
      student: {type: rnn, cell: lstm, hidden_size: 300}   # RNNStudentSpec fields
      augment: {copies: 4, seed: 0}                          # AugmentationConfig fields
      cache_teacher_logits: true                             # label the train set once, no teacher forward per step
      kd_loss_type: mse
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel

from ..data.augment import AugmentationConfig, augment_dataset
from ..data.transfer import label_with_teacher
from ..models.rnn import rnn_student_from_teacher
from ..models.rnn.config import RNNStudentConfig
from .vit_stage import ViTStudentSpec

STUDENT_TYPES = ("rnn", "vit")
_AUGMENT_FIELDS = {f.name for f in dataclasses.fields(AugmentationConfig)} - {"label_column", "flag_column"}


@dataclass
class RNNStudentSpec:
    """The ``student:`` mapping of a distill stage: the arguments of `rnn_student_from_teacher`."""

    type: str = "rnn"
    cell: str = "lstm"
    hidden_size: int = 300
    embedding_size: int | None = None
    num_layers: int = 1
    bidirectional: bool = True
    pooling: str = "max"
    classifier_hidden_size: int = 0
    dropout: float = 0.1
    freeze_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.type != "rnn":
            raise ValueError(f"student type={self.type!r} is not supported; choose one of {list(STUDENT_TYPES)}.")
        # The model config validates cell, pooling, sizes and dropout with its own messages.
        RNNStudentConfig(vocab_size=8, embedding_size=self.embedding_size or 1, hidden_size=self.hidden_size,
                         num_layers=self.num_layers, cell=self.cell, bidirectional=self.bidirectional,
                         pooling=self.pooling, classifier_hidden_size=self.classifier_hidden_size,
                         dropout=self.dropout)  # fmt: skip

    def build(self, teacher: PreTrainedModel, layers: list[int] | None = None):
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "type"}
        return rnn_student_from_teacher(teacher, **kwargs)


def _strict(cls, values: Any, key: str, valid: set[str]):
    if not isinstance(values, dict):
        raise ValueError(f"'{key}' must be a mapping, got {type(values).__name__} {values!r}.")
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"'{key}' has unknown key(s) {unknown}; valid keys: {sorted(valid)}.")
    return cls(**values)


def student_spec(extras: dict[str, Any]) -> RNNStudentSpec | ViTStudentSpec | None:
    """The stage's ``student:`` mapping as its spec (``type: rnn`` or ``type: vit``), or None."""
    values = extras.get("student")
    if values is None:
        return None
    if not isinstance(values, dict):
        raise ValueError(f"'student' must be a mapping, got {type(values).__name__} {values!r}.")
    kind = values.get("type", "rnn")
    if kind not in STUDENT_TYPES:
        raise ValueError(f"student type={kind!r} is not supported; choose one of {list(STUDENT_TYPES)}.")
    cls = RNNStudentSpec if kind == "rnn" else ViTStudentSpec
    return _strict(cls, values, "student", {f.name for f in dataclasses.fields(cls)})


def augmentation(extras: dict[str, Any]) -> AugmentationConfig | None:
    if extras.get("augment") is None:
        return None
    return _strict(AugmentationConfig, extras["augment"], "augment", _AUGMENT_FIELDS)


def check_extras(extras: dict[str, Any]) -> None:
    """Parse-time validation of a distill stage's RNN / transfer-set keys (raises ValueError)."""
    spec = student_spec(extras)
    if extras.get("student_layers") and (isinstance(spec, RNNStudentSpec) or getattr(spec, "config", None)):
        raise ValueError(
            "Give either student_layers (teacher layers to keep) or a student built from scratch (an RNN, or a ViT "
            "with a config), not both."
        )
    augmentation(extras)


def transfer_set(teacher: PreTrainedModel, train, tokenizer, extras: dict[str, Any], batch_size: int = 64):
    """The train set, augmented and / or labelled with the teacher's logits as the stage asks (else unchanged)."""
    config = augmentation(extras)
    if config is not None:
        train = augment_dataset(train, config, tokenizer, teacher)
    if extras.get("cache_teacher_logits"):
        train = label_with_teacher(teacher, train, batch_size=batch_size)
    return train
