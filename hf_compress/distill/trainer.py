"""`DistillationTrainer`: the stock `Trainer`, with a frozen teacher and a distillation loss."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, Trainer, TrainerCallback
from transformers.modeling_outputs import SequenceClassifierOutput

from ..data.teacher_pixels import TEACHER_PIXEL_VALUES
from ..data.transfer import TEACHER_LOGITS
from ..json_args import JsonTrainingArgs
from . import attention, losses
from .accumulation import accumulated_positions, accumulation_scales
from .attention import ATTN_IMPLEMENTATION, ATTN_SCORES_IMPLEMENTATION
from .checks import (
    check_compatibility,
    enable_attention_outputs,
    head_kind,
    is_regression,
    load_teacher,
    teacher_label_order,
)
from .config import DistillationConfig
from .deit_student import has_distillation_head, has_distillation_token
from .loss_terms import LossTermLogging
from .matching import EMBEDDING_KEY, build_projections
from .projection_training import ProjectionTraining
from .sentence_pipeline import SentencePipeline

logger = logging.getLogger(__name__)


class _ZeroGradAfterStep(TrainerCallback):
    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def on_step_end(self, args, state, control, **kwargs):
        self.module.zero_grad(set_to_none=True)


class DistillationTrainer(JsonTrainingArgs, SentencePipeline, ProjectionTraining, LossTermLogging, Trainer):
    """Train ``model`` (the student) to imitate ``teacher_model`` under a `DistillationConfig`.

    The teacher is frozen (``requires_grad_(False)``, ``eval()``), run under ``torch.no_grad()`` and placed by
    accelerate in evaluation mode, so it is never wrapped in DDP. Width projections (student -> teacher) are a
    separate module trained in their own optimizer parameter groups (gradients clipped on their own with the
    same ``max_grad_norm``); under DDP they are wrapped on their own, so their gradients are synchronised. They
    are saved in every Trainer checkpoint (``resume_from_checkpoint`` restores them) and never in the saved
    student, which stays an ordinary ``from_pretrained`` checkpoint.

    With attention KD on, both models run `attention.kd_attention_forward` (eager math, attention maps before
    dropout) for as long as they are in the trainer; saved checkpoints load with transformers' default.

    A ``teacher_logits`` column in the data (`hf_compress.data.label_with_teacher`) is used instead of a teacher
    forward; with it ``teacher_model`` may be None (prediction KD only: the other losses need a live teacher).

    Labels: the dataset's labels are class ids in the *student's* order (``model.config.id2label``), as it is what
    the student trains on. When both models name their labels (not the default LABEL_0, LABEL_1, ...) and the
    names are the same set in another order, the teacher's logits (live, or cached with this teacher) are reordered
    into the student's order; different names or counts are an error. When either side has only default names,
    logits are compared index by index; without a ``teacher_model`` cached logits are taken as in the student's order.

    Gradient accumulation: one step at batch 8 equals two accumulated steps at batch 4. The Trainer divides the
    loss by the accumulation steps (``loss_is_scaled_for_ga = False``); every token-level term (hidden / attention /
    embedding KD, and prediction KD and the label loss of masked-LM / token-classification heads) is first
    rescaled from its micro-batch mean to ``sum over this micro-batch / positions counted over the whole
    accumulated batch``, so micro-batches with different numbers of real tokens weigh as in one large batch.
    The counts are taken in `get_batch_samples` (per process: under DDP every rank normalises its own share).
    """

    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: PreTrainedModel | None = None,
        teacher_model: PreTrainedModel | str | os.PathLike | None = None,
        args: DistillationConfig | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, DistillationConfig):
            raise TypeError(
                f"DistillationTrainer needs args=DistillationConfig(...), got {type(args).__name__}; "
                "DistillationConfig takes every TrainingArguments field plus the distillation losses."
            )
        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"DistillationTrainer needs the student as a PreTrainedModel, got {type(model).__name__}.")
        if teacher_model is None:
            _check_cached_only(args, kwargs.get("train_dataset"))
            teacher, self.layer_pairs = None, []
        else:
            teacher = load_teacher(teacher_model, model, args.teacher_model_init_kwargs)
            columns = getattr(kwargs.get("train_dataset"), "column_names", None) or []
            self.layer_pairs = check_compatibility(model, teacher, args, TEACHER_PIXEL_VALUES in columns)
        # The teacher's class index of each student class, when their label names come in different orders.
        order = teacher_label_order(model, teacher) if teacher is not None and args.kd_weight > 0 else None
        self._teacher_label_order = torch.tensor(order) if order is not None else None
        if order is not None:
            logger.info(
                "The teacher's labels %s are in another order than the student's %s: its logits are reordered into "
                "the student's order for prediction KD (the dataset's labels are ids in the student's order).",
                teacher.config.id2label,
                model.config.id2label,
            )
        self._bare_teacher = teacher
        if args.needs_attentions:  # fail now, not at the first step, if a model cannot give attention maps
            with self._switch_attention(model, teacher, self._attention_implementation(args)):
                pass

        super().__init__(model=model, args=args, **kwargs)
        # DeiT's two-head student takes no labels in its forward: the trainer computes its class-head loss, and the
        # Trainer must still keep and hand over the dataset's labels.
        self._two_heads = has_distillation_head(model)
        extra_token = has_distillation_token(model) and teacher is not None and not has_distillation_token(teacher)
        self._extra_student_token = extra_token  # DeiT's distillation token, which a one-token teacher lacks
        if self._two_heads and not self.label_names:
            self.label_names = ["labels"]

        self._kd_kind = "regression" if is_regression(model) else args.kd_loss_type
        kind = head_kind(model)
        self._num_classes = (
            model.config.num_labels if kind.endswith("classification") and self._kd_kind != "regression" else 0
        )
        self._token_level = head_kind(model) in ("token_classification", "masked_lm")
        projections = build_projections(
            self.layer_pairs if args.hidden_weight > 0 else [],
            getattr(model.config, "hidden_size", None),  # (an RNN or a convnet has none: no feature losses)
            getattr(teacher.config, "hidden_size", None) if teacher is not None else None,
            hidden=args.hidden_weight > 0,
            embedding=args.embedding_weight > 0,
        ).to(self.args.device)
        self._projections = projections  # the bare module: optimizer groups and checkpoints use this one
        self.projections = self.accelerator.prepare_model(projections) if len(projections) else projections
        if len(projections):
            # The Trainer zeroes only the student's gradients after each optimizer step.
            self.add_callback(_ZeroGradAfterStep(projections))

        self.teacher = None
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
            self.teacher = self.accelerator.prepare_model(teacher, evaluation_mode=True)
        self._position_totals: dict[str, int] | None = None  # counted positions of the accumulated batch

    # ---- attention maps for attention KD -------------------------------------------------------------------

    @staticmethod
    def _attention_implementation(args: DistillationConfig) -> str:
        return ATTN_SCORES_IMPLEMENTATION if args.attention_loss_type == "mse_scores" else ATTN_IMPLEMENTATION

    @staticmethod
    @contextlib.contextmanager
    def _switch_attention(student: nn.Module, teacher: nn.Module, implementation: str = ATTN_IMPLEMENTATION):
        before = [(m, m.config._attn_implementation) for m in (student, teacher)]
        try:
            enable_attention_outputs(student, "student", implementation)
            enable_attention_outputs(teacher, "teacher", implementation)
            yield
        finally:
            for m, implementation in before:
                if m.config._attn_implementation != implementation:
                    m.set_attn_implementation(implementation)

    @contextlib.contextmanager
    def attention_maps(self):
        """With attention KD on: both models run `attention.kd_attention_forward` inside, and the attention
        implementation each had before afterwards. `train`, `evaluate` and `predict` run inside it, so the
        student and teacher you passed in come back as they were (the saved student never depends on it)."""
        if not self.args.needs_attentions:
            yield
            return
        with self._switch_attention(self.model, self._bare_teacher, self._attention_implementation(self.args)):
            yield

    def train(self, *args: Any, **kwargs: Any):
        try:
            with self.attention_maps():
                return super().train(*args, **kwargs)
        finally:
            self._position_totals = None

    def evaluate(self, *args: Any, **kwargs: Any):
        with self.attention_maps():
            return super().evaluate(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any):
        with self.attention_maps():
            return super().predict(*args, **kwargs)

    # ---- loss -----------------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ):
        args: DistillationConfig = self.args
        weights = self._loss_weights()
        extra = {}
        if args.needs_hidden_states:
            extra["output_hidden_states"] = True
        if args.needs_attentions:
            extra["output_attentions"] = True
        labels = inputs.get("labels")
        if labels is not None and self._num_classes:
            self._check_labels(labels)
        inputs = dict(inputs)
        cached = inputs.pop(TEACHER_LOGITS, None)
        teacher_pixels = inputs.pop(TEACHER_PIXEL_VALUES, None)
        kd_calls = attention.call_count()
        student_inputs = {k: v for k, v in inputs.items() if k != "labels"} if self._two_heads else inputs
        student_out = model(**student_inputs, **extra)
        teacher_inputs = inputs if teacher_pixels is None else {**inputs, "pixel_values": teacher_pixels}
        teacher_out = self._teacher_outputs(teacher_inputs, extra, cached)
        if args.needs_attentions:
            self._check_kd_attention(attention.call_count() - kd_calls, student_out, teacher_out)

        attention_mask = inputs.get("attention_mask")
        token_mask = attention_mask.bool() if attention_mask is not None else None
        terms: dict[str, Tensor] = {}
        if args.kd_weight > 0:
            kd_out = student_out  # a two-head student: its distillation head learns from the teacher
            if self._two_heads:
                kd_out = SequenceClassifierOutput(logits=student_out.distillation_logits)
            terms["kd_loss"] = self._kd_term(kd_out, teacher_out, labels, token_mask)
        if weights["hard_label_loss"] > 0 and self._two_heads:
            terms["hard_label_loss"] = self._class_head_loss(student_out.cls_logits, labels)
        elif weights["hard_label_loss"] > 0:
            if student_out.get("loss") is None:
                raise ValueError(
                    "hard_label_weight > 0 but the batch has no labels, so the student returned no loss (HomoDistil's "
                    "importance_label_weight > 0 needs them too). Add a 'labels' column (or set label_names), or set "
                    "the weight to 0 for unlabelled data."
                )
            terms["hard_label_loss"] = student_out.loss
            if labels is not None and not labels.is_floating_point() and not labels.ne(-100).any():
                # A batch without a single labelled position (masked LM, or only augmented rows of a transfer
                # set): the model's mean over zero items is NaN. Nothing to learn here: 0 (graph kept).
                terms["hard_label_loss"] = student_out.logits.sum() * 0.0
        if args.needs_hidden_states:
            terms.update(self._state_terms(student_out, teacher_out, token_mask))
        if args.attention_weight > 0:
            terms["attention_loss"] = self._attention_loss(student_out.attentions, teacher_out.attentions, token_mask)

        attention_kind = "tokens" if args.attention_loss_type == "kl" else "pairs"
        scales = (
            accumulation_scales(inputs, self._position_totals, attention_kind, self._token_level)
            if model.training
            else {}
        )
        loss = sum(weights[name] * value * scales.get(name, 1.0) for name, value in terms.items())
        if model.training and not torch.isfinite(loss.detach()):
            values = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
            raise FloatingPointError(
                f"Non-finite distillation loss at step {self.state.global_step} ({values}); no update was applied. "
                "Lower learning_rate, enable max_grad_norm, check the inputs for NaN/inf, or train in fp32 "
                "instead of fp16."
            )
        self._record("train" if model.training else "eval", terms)
        if return_outputs:
            # (a two-head student: only the averaged logits, DeiT's prediction, for evaluation and metrics)
            dropped = ("hidden_states", "attentions")
            if self._two_heads:
                dropped += ("cls_logits", "distillation_logits")
            kept = {k: v for k, v in student_out.items() if k not in dropped}
            return loss, type(student_out)(**kept)
        return loss

    @staticmethod
    def _class_head_loss(cls_logits: Tensor, labels: Tensor | None) -> Tensor:
        """DeiT's class-token head against the labels: cross-entropy (positions labelled -100 ignored)."""
        if labels is None:
            raise ValueError(
                "hard_label_weight > 0 but the batch has no 'labels' column: a DeiT student's class head learns from "
                "the labels. Add a 'labels' column (or set label_names)."
            )
        if not labels.ne(-100).any():
            return cls_logits.sum() * 0.0
        return nn.functional.cross_entropy(cls_logits, labels, ignore_index=-100)

    def _state_terms(self, student_out, teacher_out, token_mask: Tensor | None) -> dict[str, Tensor]:
        """The hidden-state, embedding-layer and sentence-embedding KD terms (those with a weight > 0)."""
        args, terms = self.args, {}
        s_states, t_states = self._matched_states(student_out.hidden_states, teacher_out.hidden_states)
        if args.hidden_weight > 0:
            terms["hidden_loss"] = sum(
                losses.hidden_state_loss(s_states[str(s)], t_states[str(s)], token_mask, args.hidden_loss_type)
                for s, _ in self.layer_pairs
            ) / len(self.layer_pairs)
        if args.embedding_weight > 0:
            terms["embedding_loss"] = losses.hidden_state_loss(
                s_states[EMBEDDING_KEY], t_states[EMBEDDING_KEY], token_mask, args.hidden_loss_type
            )
        if args.pooled_weight > 0:  # the final states as they are: the embedding a user gets
            mode = self._pooling_mode()
            terms["pooled_loss"] = losses.pooled_embedding_loss(
                losses.pooled(student_out.hidden_states[-1], token_mask, mode),
                losses.pooled(teacher_out.hidden_states[-1], token_mask, mode),
            )
        return terms

    def _loss_weights(self) -> dict[str, float]:
        """The weight of each term for this step (HomoDistil adds its importance signal to the label loss)."""
        args = self.args
        return {
            "kd_loss": args.kd_weight,
            "hard_label_loss": args.hard_label_weight,
            "hidden_loss": args.hidden_weight,
            "attention_loss": args.attention_weight,
            "embedding_loss": args.embedding_weight,
            "pooled_loss": args.pooled_weight,
        }

    # ---- gradient accumulation: token-level terms over the whole accumulated batch (see accumulation.py) ----

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._position_totals = accumulated_positions(batch_samples)
        return batch_samples, num_items_in_batch

    def _set_signature_columns_if_needed(self):
        """Keep the cached teacher-logit and teacher-pixel columns when the Trainer drops the columns the student does
        not take."""
        super()._set_signature_columns_if_needed()
        kept = [c for c in (TEACHER_LOGITS, TEACHER_PIXEL_VALUES) if c not in self._signature_columns]
        self._signature_columns = [*self._signature_columns, *kept]

    def _teacher_outputs(self, inputs: dict[str, Any], extra: dict[str, bool], cached: Tensor | None):
        """The teacher's outputs for this batch (its stored logits when the batch has them, else a forward), with
        the logits in the student's label order."""
        outputs = self._raw_teacher_outputs(inputs, extra, cached)
        order = self._teacher_label_order
        if outputs is not None and order is not None and outputs.get("logits") is not None:
            outputs["logits"] = outputs.logits[..., order.to(outputs.logits.device)]
        return outputs

    def _raw_teacher_outputs(self, inputs: dict[str, Any], extra: dict[str, bool], cached: Tensor | None):
        if self.args.kd_weight == 0 and not extra:
            return None  # labels only: nothing of the teacher's is used
        if cached is not None:
            if extra:
                raise ValueError(
                    f"The batch has cached '{TEACHER_LOGITS}', which serve prediction KD only, but hidden / attention "
                    "/ embedding losses are on; set their weights to 0, or remove the column and pass teacher_model."
                )
            return SequenceClassifierOutput(logits=cached)
        if self.teacher is None:
            raise ValueError(
                f"This batch has no '{TEACHER_LOGITS}' column and the trainer has no teacher_model; store the "
                "teacher's logits in every dataset it sees (train and eval) with hf_compress.data.label_with_teacher, "
                "or pass teacher_model."
            )
        teacher_inputs = {k: v for k, v in inputs.items() if k not in self.label_names and k != "labels"}
        with torch.no_grad():
            return self.teacher(**teacher_inputs, **extra)

    def _check_labels(self, labels: Tensor) -> None:
        valid = labels[labels != -100]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= self._num_classes):
            raise ValueError(
                f"Labels out of range at step {self.state.global_step}: found {int(valid.min())}..{int(valid.max())} "
                f"but the student predicts {self._num_classes} classes (0..{self._num_classes - 1}). Map the labels "
                "to 0..num_labels-1 (or -100 to ignore a position), or create the models with the right num_labels."
            )

    def _kd_term(self, student_out, teacher_out, labels: Tensor | None, token_mask: Tensor | None) -> Tensor:
        """Prediction KD on the head's logits; for question answering, the mean of the start and end KD losses,
        each a distribution over the (real, unpadded) token positions."""
        if student_out.get("start_logits") is None:
            return self._prediction_loss(student_out.logits, teacher_out.logits, labels, token_mask)
        total = 0.0
        for name in ("start_logits", "end_logits"):
            s_logits, t_logits = student_out[name], teacher_out[name]
            if token_mask is not None:
                s_logits = s_logits.masked_fill(~token_mask, -1e4)
                t_logits = t_logits.masked_fill(~token_mask, -1e4)
            total = total + self._prediction_loss(s_logits, t_logits, None, None)
        return total / 2

    def _check_kd_attention(self, calls: int, student_out, teacher_out) -> None:
        """Attention KD compares maps taken before dropout by `attention.kd_attention_forward`; a model that
        ignores the switch would hand back eager maps after dropout, so count that our function really ran."""
        expected = len(student_out.get("attentions") or ()) + len(teacher_out.get("attentions") or ())
        if calls < expected:
            raise RuntimeError(
                f"Attention KD expected {expected} calls of hf_compress's KD attention but saw {calls}: a model "
                "ignores its attention implementation, so its maps are taken after dropout. Set attention_weight=0 "
                "for this model, or add its family's refusal to hf_compress/models/families.py."
            )

    def _prediction_loss(self, s_logits: Tensor, t_logits: Tensor, labels: Tensor | None, token_mask: Tensor | None):
        if s_logits.shape != t_logits.shape:
            raise ValueError(
                f"Student logits {tuple(s_logits.shape)} and teacher logits {tuple(t_logits.shape)} differ in shape; "
                "prediction KD needs the same label set / vocabulary on both models."
            )
        mask = None
        if self._token_level:
            # Masked LM / token classification: only labelled (e.g. masked) positions, else real tokens.
            mask = labels.ne(-100) if labels is not None and labels.dim() == 2 else token_mask
        if self._kd_kind == "regression":
            return losses.regression_kd_loss(s_logits, t_logits, mask)
        if self._kd_kind == "hard":
            return losses.hard_kd_loss(s_logits, t_logits, mask)
        if self._kd_kind == "mse":
            return losses.logit_mse_loss(s_logits, t_logits, mask)
        return losses.soft_kd_loss(s_logits, t_logits, self.args.temperature, mask)

    def _matched_states(self, s_states: tuple[Tensor, ...], t_states: tuple[Tensor, ...]):
        """Student states (projected to the teacher's width, in one call) and their teacher targets, by key.

        ``hidden_states[0]`` is the embedding output, ``hidden_states[i + 1]`` the output of layer i.
        """
        student, teacher = {}, {}
        if self._extra_student_token:  # DeiT's distillation token, which a one-token teacher has no state for
            s_states = tuple(torch.cat([state[:, :1], state[:, 2:]], dim=1) for state in s_states)
        if self.args.hidden_weight > 0:
            for s, t in self.layer_pairs:
                student[str(s)], teacher[str(s)] = s_states[s + 1], t_states[t + 1]
        if self.args.embedding_weight > 0:
            student[EMBEDDING_KEY], teacher[EMBEDDING_KEY] = s_states[0], t_states[0]
        return (self.projections(student) if len(self._projections) else student), teacher

    def _attention_loss(self, s_maps: tuple[Tensor, ...], t_maps: tuple[Tensor, ...], mask: Tensor | None):
        if not s_maps or not t_maps:
            raise ValueError(
                "attention_weight > 0 but the models returned no attention maps: call compute_loss / training_step "
                "inside `with trainer.attention_maps():` (train, evaluate and predict do this themselves)."
            )
        kept_heads = self._kept_heads()
        total = 0.0
        for s, t in self.layer_pairs:
            s_map, t_map = s_maps[s], t_maps[t]
            keep = None if kept_heads is None or bool(kept_heads[s].all()) else kept_heads[s]
            if keep is not None:  # pruned heads compute nothing useful: only kept heads are compared
                s_map = s_map[:, keep]
                if self.args.attention_head_mode == "per_head":
                    t_map = t_map[:, keep]
            if self.args.attention_head_mode == "mean":
                s_map, t_map = losses.average_heads(s_map), losses.average_heads(t_map)
            total = total + losses.attention_loss(s_map, t_map, mask, self.args.attention_loss_type)
        return total / len(self.layer_pairs)

    def _kept_heads(self) -> Tensor | None:
        """(student layers, heads) bool of the heads still in the student, or None when all are (HomoDistil
        overrides this while it prunes)."""
        return None

    # ---- evaluation -----------------------------------------------------------------------------------

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Distillation loss and the student's logits (also for unlabelled, task-agnostic evaluation)."""
        inputs = self._prepare_inputs(inputs)
        label_values = [inputs.get(name) for name in self.label_names]
        labels = None
        if label_values and all(v is not None for v in label_values):
            labels = label_values[0] if len(label_values) == 1 else tuple(label_values)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach().mean()
        if prediction_loss_only:
            return loss, None, None
        ignore = set(ignore_keys or []) | {"loss"}
        logits = tuple(v for k, v in outputs.items() if k not in ignore)
        logits = logits[0] if len(logits) == 1 else logits
        return loss, logits, labels


def _check_cached_only(args: DistillationConfig, train_dataset) -> None:
    """Without a teacher, the only teacher signal is a cached logit column: prediction KD only."""
    if args.needs_hidden_states or args.needs_attentions:
        raise ValueError(
            "teacher_model=None works only with cached teacher logits, which serve prediction KD; hidden / attention "
            "/ embedding losses need a live teacher. Pass teacher_model, or set those weights to 0."
        )
    columns = getattr(train_dataset, "column_names", None)
    if args.kd_weight > 0 and TEACHER_LOGITS not in (columns or []):
        raise ValueError(
            f"DistillationTrainer needs teacher_model= (a PreTrainedModel, a local path or a Hub id), or a "
            f"train_dataset with a '{TEACHER_LOGITS}' column (hf_compress.data.label_with_teacher); got neither."
        )
