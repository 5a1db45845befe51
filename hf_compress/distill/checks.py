"""Checks run before training: can this teacher teach this student with the losses asked for?

Each failure is a ValueError that says what does not fit and what to do about it.
"""

from __future__ import annotations

import os
from typing import Literal

from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
)

from ..models.arch import is_transformer, modality_of
from ..models.families import find_family, refuse
from ..models.labels import match_by_name, named_labels
from .attention import ATTN_IMPLEMENTATION
from .config import DistillationConfig
from .deit_student import has_distillation_head, has_distillation_token
from .matching import recorded_teacher_layers, resolve_layer_map

HeadKind = Literal[
    "sequence_classification",
    "token_classification",
    "question_answering",
    "masked_lm",
    "image_classification",
    "none",
]

_HEADS: dict[str, tuple[HeadKind, type]] = {
    "ForImageClassificationWithTeacher": ("image_classification", AutoModelForImageClassification),  # DeiT's two heads
    "ForSequenceClassification": ("sequence_classification", AutoModelForSequenceClassification),
    "ForTokenClassification": ("token_classification", AutoModelForTokenClassification),
    "ForQuestionAnswering": ("question_answering", AutoModelForQuestionAnswering),
    "ForMaskedLM": ("masked_lm", AutoModelForMaskedLM),
    "ForImageClassification": ("image_classification", AutoModelForImageClassification),
}
_CLASSIFICATION = ("sequence_classification", "token_classification", "image_classification")


def head_kind(model: PreTrainedModel) -> HeadKind:
    """What the model's head predicts, read from its class name; ``"none"`` for a bare encoder."""
    name = type(model).__name__
    for suffix, (kind, _) in _HEADS.items():
        if name.endswith(suffix):
            return kind
    if model.base_model is model:
        return "none"
    raise ValueError(
        f"{name} is not a supported head; hf_compress distils sequence / token / image classification, question "
        "answering, masked-LM and bare encoder (AutoModel) models. Distil the encoder of this model through one of "
        "those classes (e.g. AutoModel) and put the head back afterwards."
    )


def is_regression(model: PreTrainedModel) -> bool:
    """A classification head with one output, or ``problem_type == "regression"``: KD by MSE, not KL."""
    config = model.config
    return head_kind(model) in _CLASSIFICATION and (
        config.problem_type == "regression" or (config.problem_type is None and config.num_labels == 1)
    )


def load_teacher(teacher: PreTrainedModel | str | os.PathLike, student: PreTrainedModel, init_kwargs: dict | None):
    """The teacher as a model: given one, or loaded from a path / Hub id with the student's Auto class."""
    if isinstance(teacher, PreTrainedModel):
        return teacher
    if isinstance(teacher, (str, os.PathLike)):
        kind = head_kind(student)
        auto_cls = next((cls for k, cls in _HEADS.values() if k == kind), AutoModel)
        return auto_cls.from_pretrained(teacher, **(init_kwargs or {}))
    raise TypeError(
        f"teacher_model must be a PreTrainedModel, a local path or a Hub id, got {type(teacher).__name__}."
    )


def enable_attention_outputs(model: PreTrainedModel, role: str, implementation: str = ATTN_IMPLEMENTATION) -> None:
    """Switch to eager-style attention so that ``output_attentions=True`` returns the attention probabilities.

    transformers 5 defaults to sdpa, which returns no attention weights, and its eager attention returns them
    after dropout; we switch to `attention.kd_attention_forward` (eager math, pre-dropout maps). It is slower
    than sdpa, so this is only called when attention KD is on. ``implementation`` may instead be
    `attention.ATTN_SCORES_IMPLEMENTATION`, whose maps are the pre-softmax scores.
    """
    family = find_family(model)  # an unknown family is checked at the first step (attention.call_count)
    refuse(
        family and family.attention_kd, f"Attention KD (attention_weight > 0) with the {role} {type(model).__name__}"
    )
    if model.config._attn_implementation == implementation:
        return
    try:
        model.set_attn_implementation(implementation)
    except (ValueError, NotImplementedError, AttributeError) as err:
        raise ValueError(
            f"attention_weight > 0 needs the {role}'s attention maps, but {type(model).__name__} cannot switch to "
            f"eager attention ({err}). Set attention_weight=0, or use a model that supports eager attention."
        ) from err


def _relabel_hint(teacher_config) -> str:
    return (
        f"Build the student with the teacher's labels (num_labels={teacher_config.num_labels}, "
        "id2label=teacher.config.id2label, label2id=teacher.config.label2id), give the dataset's labels as ids in "
        "that order, or set kd_weight=0."
    )


def _id2label(config) -> dict[int, str]:
    return {int(i): str(name) for i, name in sorted((config.id2label or {}).items(), key=lambda kv: int(kv[0]))}


def teacher_label_order(student: PreTrainedModel, teacher: PreTrainedModel) -> list[int] | None:
    """For prediction KD of a classifier: the teacher's class index of each of the student's classes, or None
    to compare the logits index by index.

    The dataset's labels are class ids in the student's order (it is what the student trains on), so the teacher's
    logits are brought into that order. When both configs name their labels (not the default LABEL_0, LABEL_1, ...)
    and the names are the same set in another order (compared as `match_by_name` does: case-insensitively), the
    result reorders them; different names are a ValueError.
    When either side has only default names there is nothing to compare, and index order is kept. Label counts
    are checked by `check_compatibility`.
    """
    if head_kind(student) not in _CLASSIFICATION or is_regression(student) or is_regression(teacher):
        return None
    s_map, t_map = named_labels(student.config.id2label), named_labels(teacher.config.id2label)
    if s_map is None or t_map is None:
        return None
    order = match_by_name(s_map, t_map)
    if order is None:
        raise ValueError(
            f"Label mismatch: the teacher's id2label is {t_map}, the student's {s_map}; prediction KD needs the same "
            "distinct label names on both, or it would teach the student the wrong classes. "
            f"{_relabel_hint(teacher.config)}"
        )
    if all(i == j for i, j in order.items()):
        return None
    return [order[i] for i in range(len(s_map))]


def _check_inputs(
    student: PreTrainedModel, teacher: PreTrainedModel, args: DistillationConfig, teacher_pixels: bool = False
) -> None:
    """Both models must read the same inputs: one modality, one vocabulary, one image geometry (unless the data
    carries the teacher's own ``teacher_pixel_values``)."""
    s_cfg, t_cfg = student.config, teacher.config
    s_mod, t_mod = modality_of(student), modality_of(teacher)
    if s_mod != t_mod:
        raise ValueError(f"The student is a {s_mod} model but the teacher is a {t_mod} model; they must match.")
    if s_mod == "text" and s_cfg.vocab_size != t_cfg.vocab_size:
        raise ValueError(
            f"Vocabulary mismatch: the teacher has vocab_size={t_cfg.vocab_size}, the student {s_cfg.vocab_size}. "
            "Distillation feeds both models the same token ids, so they must share a tokenizer: build the student "
            "from the teacher (make_student) or from the teacher's config and tokenizer."
        )
    if s_mod == "vision" and not teacher_pixels:
        # A convnet reads any image size; a transformer's position embeddings fix it.
        names = ("image_size", "num_channels") if is_transformer(t_cfg) else ("num_channels",)
        for name in names:
            if getattr(s_cfg, name, None) != getattr(t_cfg, name, None):
                raise ValueError(
                    f"Image input mismatch: teacher {type(teacher).__name__} has {name}={getattr(t_cfg, name, None)}, "
                    f"the student {getattr(s_cfg, name, None)}, but both would see the same pixel_values. Give the "
                    "student the teacher's image_size and num_channels, or preprocess every image twice, each with "
                    "its own model's image processor: hf_compress.data.add_teacher_pixels(dataset, "
                    "student_processor, teacher_processor) adds the teacher's 'teacher_pixel_values' column, which "
                    "the trainer feeds to the teacher."
                )
    if (args.needs_hidden_states or args.needs_attentions) and s_mod == "vision":
        if getattr(s_cfg, "patch_size", None) != getattr(t_cfg, "patch_size", None) or teacher_pixels:
            raise ValueError(
                f"Hidden-state / attention KD compares patch by patch, but the teacher has patch_size="
                f"{getattr(t_cfg, 'patch_size', None)} and the student {getattr(s_cfg, 'patch_size', None)}"
                f"{' and they read differently preprocessed images' if teacher_pixels else ''}. Use the same "
                "patch_size and pixel_values, or only prediction KD (hidden_weight=attention_weight=embedding_weight"
                "=pooled_weight=0)."
            )


def _check_feature_teacher(student: PreTrainedModel, teacher: PreTrainedModel, args: DistillationConfig) -> None:
    """Hidden-state / attention / embedding KD match transformer layers: both models must have them."""
    if not (args.needs_hidden_states or args.needs_attentions):
        return
    for role, model in (("student", student), ("teacher", teacher)):
        if not is_transformer(model.config):
            raise ValueError(
                f"Hidden-state / attention / embedding KD compare the two models layer by layer and token by token, "
                f"but the {role} {type(model).__name__} ({model.config.model_type}) has no transformer layers "
                "(a convnet's stages are feature maps, not tokens). Distil across architectures with prediction KD "
                "and labels only (hidden_weight=attention_weight=embedding_weight=pooled_weight=0; kd_loss_type "
                "'hard' with a distillation-token student is DeiT's recipe)."
            )


def _check_distillation_head(student: PreTrainedModel, teacher: PreTrainedModel, args: DistillationConfig) -> None:
    """DeiT's two heads: the class head learns from the labels, the distillation head from the teacher; the
    distillation token has no counterpart in a one-token teacher's attention maps."""
    if not has_distillation_head(student):
        return
    if is_regression(student):
        raise ValueError(
            f"{type(student).__name__} is a classifier with a distillation token; a regression head "
            "(num_labels=1) has no classes to distil. Use a plain student."
        )
    if args.attention_weight > 0 and has_distillation_token(student) and not has_distillation_token(teacher):
        raise ValueError(
            f"Attention KD compares maps over the same tokens, but the student {type(student).__name__} has a "
            f"distillation token that the teacher {type(teacher).__name__} lacks. Set attention_weight=0 (hidden-state"
            " KD works: it compares the teacher's tokens only), or use a DeiT teacher."
        )
    missing = [name for name in ("kd_weight", "hard_label_weight") if getattr(args, name) <= 0]
    if missing:
        raise ValueError(
            f"{type(student).__name__} has two heads: the distillation head learns only from the teacher (kd_weight) "
            f"and the class head only from the labels (hard_label_weight), and inference averages both, so both "
            f"weights must be > 0 ({', '.join(missing)} is 0). DeiT uses kd_loss_type='hard', kd_weight=0.5, "
            "hard_label_weight=0.5; for KD without labels use a student with one head."
        )


def _check_heads(student: PreTrainedModel, teacher: PreTrainedModel, args: DistillationConfig) -> None:
    """Prediction KD and label losses need heads that predict the same things."""
    s_cfg, t_cfg = student.config, teacher.config
    s_head, t_head = head_kind(student), head_kind(teacher)
    if args.kd_weight > 0:
        if s_head == "none" or t_head == "none":
            which, headless = ("student", student) if s_head == "none" else ("teacher", teacher)
            raise ValueError(
                f"Prediction KD (kd_weight > 0) needs logits, but the {which} ({type(headless).__name__}) "
                "has no head. For task-agnostic distillation set kd_weight=0 and use hidden / attention / embedding "
                "losses, or give both models a masked-LM head."
            )
        if s_head != t_head:
            raise ValueError(
                f"Prediction KD needs the same kind of head on both models: the teacher is {t_head}, "
                f"the student {s_head}."
            )
        if s_head in _CLASSIFICATION and s_cfg.num_labels != t_cfg.num_labels:
            raise ValueError(
                f"Label-count mismatch: the teacher predicts {t_cfg.num_labels} labels, the student "
                f"{s_cfg.num_labels} (teacher id2label {_id2label(t_cfg)}, student id2label {_id2label(s_cfg)}). "
                f"{_relabel_hint(t_cfg)}"
            )
        if is_regression(student) != is_regression(teacher):
            raise ValueError(
                "One model is a regression head and the other a classifier; prediction KD needs both alike."
            )
    if args.hard_label_weight > 0 and s_head == "none":
        raise ValueError(
            f"hard_label_weight > 0 needs a student with a task head; {type(student).__name__} has none. "
            "Set hard_label_weight=0."
        )


def check_compatibility(
    student: PreTrainedModel, teacher: PreTrainedModel, args: DistillationConfig, teacher_pixels: bool = False
):
    """Validate the pair for the configured losses; return the resolved (student, teacher) layer pairs.

    ``teacher_pixels``: the data carries the teacher's own ``teacher_pixel_values`` (`data.add_teacher_pixels`)."""
    for role, model in (("student", student), ("teacher", teacher)):
        if getattr(model, "is_quantized", False) or getattr(model.config, "quantization_config", None):
            raise ValueError(
                f"The {role} is quantized; distillation and pruning train float weights. Train first, quantize "
                "last: distil / prune the float model, then quantize the result."
            )
    s_cfg, t_cfg = student.config, teacher.config
    _check_feature_teacher(student, teacher, args)
    for role, model in (("student", student), ("teacher", teacher)):
        family = find_family(model)
        if family is None:
            continue
        if args.hidden_weight > 0 or args.embedding_weight > 0:
            refuse(family.hidden_kd, f"Hidden-state / embedding KD with the {role} {type(model).__name__}")
        if args.attention_weight > 0:
            refuse(family.attention_kd, f"Attention KD (attention_weight > 0) with the {role} {type(model).__name__}")
    _check_inputs(student, teacher, args, teacher_pixels)
    _check_heads(student, teacher, args)
    _check_distillation_head(student, teacher, args)
    pairs: list[tuple[int, int]] = []
    if args.hidden_weight > 0 or args.attention_weight > 0:
        embedder = head_kind(student) == "none"  # its last states are its output: they learn the teacher's last
        pairs = resolve_layer_map(args.layer_map_spec, s_cfg.num_hidden_layers, t_cfg.num_hidden_layers,
                                  recorded_teacher_layers(s_cfg), ends_at_last=embedder)  # fmt: skip
    if args.attention_weight > 0 and args.attention_head_mode == "per_head":
        if s_cfg.num_attention_heads != t_cfg.num_attention_heads:
            raise ValueError(
                f"Attention KD per head needs equal head counts, but the teacher has {t_cfg.num_attention_heads} "
                f"heads and the student {s_cfg.num_attention_heads}. Set attention_head_mode='mean' to compare "
                "head-averaged attention maps."
            )
    return pairs
