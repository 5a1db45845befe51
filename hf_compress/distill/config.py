"""`DistillationConfig`: the training arguments of `DistillationTrainer`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from transformers import TrainingArguments

from .losses import AttentionLossType, HiddenLossType
from .matching import LayerMapSpec, parse_layer_map

KDLossType = Literal["soft", "hard", "mse"]
AttentionHeadMode = Literal["per_head", "mean"]
Pooling = Literal["auto", "mean", "cls"]

_LOSS_WEIGHTS = ("kd_weight", "hard_label_weight", "hidden_weight", "attention_weight", "embedding_weight",
                 "pooled_weight")  # fmt: skip


def check_choice(name: str, value: Any, literal: Any) -> None:
    """Raise a ValueError naming the valid choices when ``value`` is not one of ``literal``'s."""
    choices = get_args(literal)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(choices)}.")


@dataclass
class DistillationConfig(TrainingArguments):
    """`TrainingArguments` plus the distillation objective.

    The loss is ``kd_weight * prediction KD + hard_label_weight * the student's own loss on the labels +
    hidden_weight * hidden-state KD + attention_weight * attention KD + embedding_weight * embedding KD +
    pooled_weight * sentence-embedding KD``. Every term is logged on its own (``kd_loss``, ``hard_label_loss``,
    ``hidden_loss``, ``attention_loss``, ``embedding_loss``, ``pooled_loss``). Terms with weight 0 are not
    computed, and attention maps are only requested (which switches both models to eager attention) when
    ``attention_weight > 0``.
    """

    teacher_model_init_kwargs: dict | None = field(
        default=None,
        metadata={"help": "Keyword arguments for `from_pretrained` when the teacher is given as a path or Hub id."},
    )
    temperature: float = field(default=2.0, metadata={"help": "Softmax temperature of prediction-layer KD (> 0)."})
    kd_weight: float = field(default=1.0, metadata={"help": "Weight of prediction-layer KD on the logits."})
    kd_loss_type: str = field(
        default="soft",
        metadata={
            "help": "'soft': KL between temperature-softened distributions (MSE for regression heads); "
            "'hard': DeiT-style cross-entropy against the teacher's argmax; 'mse': MSE on the raw logits "
            "(Tang et al. 2019, the usual choice for RNN students).",
            "choices": list(get_args(KDLossType)),
        },
    )
    hard_label_weight: float = field(
        default=0.0, metadata={"help": "Weight of the student's own loss on the dataset labels (0 = ignore labels)."}
    )
    hidden_weight: float = field(default=0.0, metadata={"help": "Weight of layer-wise hidden-state KD."})
    hidden_loss_type: str = field(
        default="mse", metadata={"help": "Hidden-state / embedding loss.", "choices": list(get_args(HiddenLossType))}
    )
    layer_map: str = field(  # a list is accepted too (see help); `str` keeps HfArgumentParser happy
        default="auto",
        metadata={
            "help": "Which teacher layer each student layer learns from: 'auto' (the teacher layer it was copied "
            "from when make_student built it, the last one learning from the teacher's last layer when the student "
            "has no task head (an embedder), else 'uniform'), 'uniform' (every k-th teacher layer), "
            "'last' (the last S teacher layers), a list with one 0-based teacher layer per student layer "
            "('1,3,5'), or student:teacher pairs ('0:1,2:5')."
        },
    )
    attention_weight: float = field(default=0.0, metadata={"help": "Weight of attention-distribution KD."})
    attention_loss_type: str = field(
        default="kl",
        metadata={
            "help": "Attention loss: 'kl' or 'mse' on the attention probabilities, 'mse_scores' on the pre-softmax "
            "scores (TinyBERT's form; far larger than 'mse' on probabilities, so a smaller weight may suit).",
            "choices": list(get_args(AttentionLossType)),
        },
    )
    attention_head_mode: str = field(
        default="per_head",
        metadata={
            "help": "'per_head' compares head h with head h (head counts must match); 'mean' compares "
            "head-averaged maps, which is how models with different head counts are distilled.",
            "choices": list(get_args(AttentionHeadMode)),
        },
    )
    embedding_weight: float = field(default=0.0, metadata={"help": "Weight of embedding-layer KD."})
    pooled_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of KD on the sentence embedding: the last hidden states pooled (`pooling`) and "
            "L2-normalised, as a sentence-transformers model embeds. Same width: 1 - cosine to the teacher's "
            "embedding; other widths: the batch's cosine-similarity matrix against the teacher's (no projection)."
        },
    )
    pooling: str = field(
        default="auto",
        metadata={
            "help": "How the sentence embedding pools tokens for pooled_weight: 'mean' (over real tokens), 'cls', or "
            "'auto' (the teacher's sentence-transformers Pooling module when it has one, else mean).",
            "choices": ["auto", "mean", "cls"],
        },
    )
    projection_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the width projections (student -> teacher); default: learning_rate."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (
            isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0
        ):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}.")
        for name in _LOSS_WEIGHTS:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        if all(getattr(self, name) == 0 for name in _LOSS_WEIGHTS):
            raise ValueError(f"All loss weights are 0 ({', '.join(_LOSS_WEIGHTS)}); set at least one to > 0.")
        check_choice("kd_loss_type", self.kd_loss_type, KDLossType)
        check_choice("hidden_loss_type", self.hidden_loss_type, HiddenLossType)
        check_choice("attention_loss_type", self.attention_loss_type, AttentionLossType)
        check_choice("attention_head_mode", self.attention_head_mode, AttentionHeadMode)
        check_choice("pooling", self.pooling, Pooling)
        if self.projection_learning_rate is not None and self.projection_learning_rate <= 0:
            raise ValueError(f"projection_learning_rate must be > 0, got {self.projection_learning_rate!r}.")
        self.layer_map_spec: LayerMapSpec = parse_layer_map(self.layer_map)

    @property
    def needs_hidden_states(self) -> bool:
        return self.hidden_weight > 0 or self.embedding_weight > 0 or self.pooled_weight > 0

    @property
    def needs_attentions(self) -> bool:
        return self.attention_weight > 0
