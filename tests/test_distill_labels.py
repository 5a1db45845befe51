"""Prediction KD compares the teacher's and the student's logits class by class, by label name: a teacher whose
id2label lists the same names in another order is reordered into the student's order (the dataset's labels are
ids in the student's order); different names or counts are an error; default names keep index order."""

import copy
import logging

import pytest
import torch
from conftest import bert_config, text_dataset
from transformers import BertForSequenceClassification, BertForTokenClassification

from hf_compress import DistillationConfig, DistillationTrainer
from hf_compress.data import label_with_teacher
from hf_compress.distill import losses
from hf_compress.distill.trainer import TEACHER_LOGITS

TEACHER_LABELS = {0: "neg", 1: "pos", 2: "neu"}
STUDENT_LABELS = {0: "pos", 1: "neu", 2: "neg"}
PERM = [1, 2, 0]  # the teacher's index of each student class: pos, neu, neg


def args(tmp_out, **kw):
    base = dict(output_dir=tmp_out, report_to=[], use_cpu=True, max_steps=2, per_device_train_batch_size=8)
    base.update(kw)
    return DistillationConfig(**base)


def labels(id2label):
    return dict(num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()})


def models(teacher_labels=TEACHER_LABELS, student_labels=STUDENT_LABELS, cls=BertForSequenceClassification):
    torch.manual_seed(0)
    teacher = cls(bert_config(**labels(teacher_labels)))
    student = cls(bert_config(num_hidden_layers=2, **labels(student_labels)))
    return teacher, student


def batch(n=8):
    return dict(text_dataset(n, seed=3).with_format("torch")[:])


def by_hand(kind, s_logits, t_logits, temperature=2.0):
    if kind == "hard":
        return losses.hard_kd_loss(s_logits, t_logits)
    if kind == "mse":
        return losses.logit_mse_loss(s_logits, t_logits)
    return losses.soft_kd_loss(s_logits, t_logits, temperature)


def outputs(teacher, student, inputs):
    inputs = {k: v for k, v in inputs.items() if k != "labels"}
    with torch.no_grad():
        return teacher.eval()(**inputs).logits, student.eval()(**inputs).logits


@pytest.mark.parametrize("kind", ["soft", "hard", "mse"])
def test_teacher_logits_are_reordered_into_the_students_label_order(tmp_out, kind, caplog):
    teacher, student = models()
    with caplog.at_level(logging.INFO, logger="hf_compress.distill.trainer"):
        trainer = DistillationTrainer(
            model=student, teacher_model=teacher, args=args(tmp_out, kd_loss_type=kind, temperature=2.0)
        )
    assert "reordered into the student's order" in caplog.text
    inputs = batch()
    t_logits, s_logits = outputs(teacher, student, inputs)
    with torch.no_grad():
        loss = trainer.compute_loss(student, inputs)
    torch.testing.assert_close(loss, by_hand(kind, s_logits, t_logits[:, PERM]))
    assert not torch.allclose(loss, by_hand(kind, s_logits, t_logits))  # index order would differ


def permuted_copy(teacher):
    """A student that predicts exactly what the teacher predicts, with its classes in STUDENT_LABELS order."""
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.classifier.weight.copy_(teacher.classifier.weight[PERM])
        student.classifier.bias.copy_(teacher.classifier.bias[PERM])
    student.config.id2label = dict(STUDENT_LABELS)
    student.config.label2id = {v: k for k, v in STUDENT_LABELS.items()}
    return student


@pytest.mark.parametrize("cached", [False, True], ids=["live_teacher", "cached_logits"])
def test_a_student_that_predicts_the_teachers_classes_in_its_own_order_has_zero_kd_loss(tmp_out, cached):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config(**labels(TEACHER_LABELS)))
    student = permuted_copy(teacher)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args(tmp_out))
    inputs = batch()
    if cached:  # stored by the teacher, so in the teacher's order
        data = label_with_teacher(teacher, text_dataset(8, seed=3))
        inputs[TEACHER_LOGITS] = torch.tensor(data[TEACHER_LOGITS])
    with torch.no_grad():
        assert trainer.compute_loss(student.eval(), inputs) < 1e-6


def test_token_classification_logits_are_reordered_too(tmp_out):
    teacher, student = models(cls=BertForTokenClassification)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args(tmp_out))
    inputs = batch()
    inputs["labels"] = torch.randint(0, 3, inputs["input_ids"].shape)
    t_logits, s_logits = outputs(teacher, student, inputs)
    with torch.no_grad():
        loss = trainer.compute_loss(student.eval(), inputs)
    mask = inputs["labels"].ne(-100)
    torch.testing.assert_close(loss, losses.soft_kd_loss(s_logits, t_logits[..., PERM], 2.0, mask))


def test_training_with_reordered_labels_runs(tmp_out):
    teacher, student = models()
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args(tmp_out, hard_label_weight=0.5), train_dataset=text_dataset(16)
    )
    trainer.train()
    assert trainer.state.global_step == 2


@pytest.mark.parametrize(
    "teacher_labels, student_labels, message",
    [
        (
            TEACHER_LABELS,
            {0: "pos", 1: "neu", 2: "negative"},
            r"Label mismatch: the teacher's id2label is \{0: 'neg', 1: 'pos', 2: 'neu'\}, the student's "
            r"\{0: 'pos', 1: 'neu', 2: 'negative'\}.*id2label=teacher.config.id2label",
        ),
        (
            {0: "neg", 1: "pos", 2: "pos"},
            {0: "pos", 1: "neg", 2: "pos"},
            "Label mismatch.*needs the same distinct label names",
        ),
        (
            TEACHER_LABELS,
            {0: "pos", 1: "neg"},
            r"Label-count mismatch: the teacher predicts 3 labels, the student 2 \(teacher id2label "
            r"\{0: 'neg', 1: 'pos', 2: 'neu'\}, student id2label \{0: 'pos', 1: 'neg'\}\).*label2id=",
        ),
        (
            None,
            {0: "pos", 1: "neg"},
            r"Label-count mismatch: the teacher predicts 3 labels, the student 2 \(teacher id2label \{0: 'LABEL_0'",
        ),
    ],
    ids=["other_names", "repeated_names", "other_count", "other_count_default_names"],
)
def test_label_maps_that_cannot_be_aligned_are_rejected(tmp_out, teacher_labels, student_labels, message):
    torch.manual_seed(0)
    teacher_config = bert_config(**labels(teacher_labels)) if teacher_labels else bert_config(num_labels=3)
    teacher = BertForSequenceClassification(teacher_config)
    student = BertForSequenceClassification(bert_config(num_hidden_layers=2, **labels(student_labels)))
    with pytest.raises(ValueError, match=message):
        DistillationTrainer(model=student, teacher_model=teacher, args=args(tmp_out))


@pytest.mark.parametrize(
    "teacher_labels, student_labels",
    [(None, STUDENT_LABELS), (TEACHER_LABELS, None), (None, None), (TEACHER_LABELS, TEACHER_LABELS)],
    ids=["default_teacher", "default_student", "both_default", "same_order"],
)
def test_default_or_identical_names_keep_index_order(tmp_out, teacher_labels, student_labels):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config(**(labels(teacher_labels) if teacher_labels else {})))
    student_config = bert_config(num_hidden_layers=2, **(labels(student_labels) if student_labels else {}))
    student = BertForSequenceClassification(student_config)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args(tmp_out))
    inputs = batch()
    t_logits, s_logits = outputs(teacher, student, inputs)
    with torch.no_grad():
        loss = trainer.compute_loss(student, inputs)
    torch.testing.assert_close(loss, losses.soft_kd_loss(s_logits, t_logits, 2.0))


@pytest.mark.parametrize(
    "teacher_labels, perm",
    [({0: "NEG", 1: " Pos", 2: "Neu"}, PERM), ({0: "Pos", 1: "NEU", 2: "neg"}, None)],
    ids=["other_case_other_order", "other_case_same_order"],
)
def test_names_are_matched_case_insensitively_as_the_runner_does(tmp_out, teacher_labels, perm):
    teacher, student = models(teacher_labels=teacher_labels)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args(tmp_out))
    inputs = batch()
    t_logits, s_logits = outputs(teacher, student, inputs)
    with torch.no_grad():
        loss = trainer.compute_loss(student, inputs)
    torch.testing.assert_close(loss, losses.soft_kd_loss(s_logits, t_logits[:, perm] if perm else t_logits, 2.0))


def test_labels_are_not_compared_without_prediction_kd(tmp_out):
    teacher, student = models(student_labels={0: "a", 1: "b", 2: "c"})
    DistillationTrainer(model=student, teacher_model=teacher, args=args(tmp_out, kd_weight=0, hidden_weight=1.0))
