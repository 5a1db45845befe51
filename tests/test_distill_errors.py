"""Every user mistake the distillation trainer can detect gives an error that says what to do."""

import pytest
import torch
from conftest import bert_config, image_dataset, text_dataset, vit_config
from transformers import (
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    TrainingArguments,
    ViTForImageClassification,
)

from hf_compress import DistillationConfig, DistillationTrainer


def args(tmp_out, **kw):
    return DistillationConfig(output_dir=tmp_out, report_to=[], use_cpu=True, max_steps=1, **kw)


def bert(cls=BertForSequenceClassification, **kw):
    return cls(bert_config(**kw))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0), "temperature must be a finite number > 0"),
        (dict(temperature=float("nan")), "temperature must be a finite number > 0"),
        (dict(hidden_weight=-1), "hidden_weight must be a finite number >= 0"),
        (dict(kd_weight=0), "All loss weights are 0"),
        (
            dict(kd_loss_type="cosine"),
            r"kd_loss_type='cosine' is not supported; choose one of \['soft', 'hard', 'mse'\]",
        ),
        (dict(hidden_loss_type="l1"), "hidden_loss_type='l1' is not supported"),
        (dict(attention_loss_type="js"), "attention_loss_type='js' is not supported"),
        (dict(attention_head_mode="max"), "attention_head_mode='max' is not supported"),
        (dict(layer_map="every_other"), "layer_map='every_other' is not understood"),
        (dict(projection_learning_rate=0.0), "projection_learning_rate must be > 0"),
    ],
)
def test_config_validation(tmp_out, kwargs, message):
    with pytest.raises(ValueError, match=message):
        args(tmp_out, **kwargs)


@pytest.mark.parametrize(
    "make_pair, settings, message",
    [
        (
            lambda: (bert(), bert(vocab_size=70)),
            {},
            "Vocabulary mismatch: the teacher has vocab_size=64, the student 70",
        ),
        (
            lambda: (bert(), bert(num_labels=2)),
            {},
            "Label-count mismatch: the teacher predicts 3 labels, the student 2",
        ),
        (
            lambda: (bert(), bert(num_hidden_layers=2)),
            dict(hidden_weight=1, layer_map=[0, 4]),
            "teacher layer 4 is out of range",
        ),
        (
            lambda: (bert(), bert(hidden_size=16, num_attention_heads=2)),
            dict(attention_weight=1),
            "Attention KD per head needs equal head counts.*attention_head_mode='mean'",
        ),
        (lambda: (bert(BertModel), bert(BertModel)), {}, r"Prediction KD \(kd_weight > 0\) needs logits.*no head"),
        (
            lambda: (bert(BertModel), bert(BertModel)),
            dict(kd_weight=0, hidden_weight=1, hard_label_weight=1),
            "hard_label_weight > 0 needs a student with a task head",
        ),
        (lambda: (bert(BertForMaskedLM), bert()), {}, "same kind of head on both models: the teacher is masked_lm"),
        (
            lambda: (ViTForImageClassification(vit_config()), ViTForImageClassification(vit_config(image_size=32))),
            {},
            "Image input mismatch: teacher ViTForImageClassification has image_size=16, the student 32",
        ),
        (
            lambda: (ViTForImageClassification(vit_config()), ViTForImageClassification(vit_config(patch_size=8))),
            dict(hidden_weight=1),
            "compares patch by patch, but the teacher has patch_size=4 and the student 8",
        ),
        (
            lambda: (ViTForImageClassification(vit_config()), bert()),
            {},
            "The student is a text model but the teacher is a vision model",
        ),
    ],
)
def test_incompatible_pairs_are_rejected_before_training(tmp_out, make_pair, settings, message):
    teacher, student = make_pair()
    with pytest.raises(ValueError, match=message):
        DistillationTrainer(model=student, teacher_model=teacher, args=args(tmp_out, **settings))


def test_plain_training_arguments_are_refused(tmp_out):
    with pytest.raises(TypeError, match="needs args=DistillationConfig"):
        DistillationTrainer(model=bert(), teacher_model=bert(), args=TrainingArguments(output_dir=tmp_out))


def test_missing_teacher(tmp_out):
    with pytest.raises(ValueError, match="needs teacher_model="):
        DistillationTrainer(model=bert(), args=args(tmp_out))


def test_teacher_of_wrong_type(tmp_out):
    with pytest.raises(TypeError, match="teacher_model must be a PreTrainedModel, a local path or a Hub id"):
        DistillationTrainer(model=bert(), teacher_model=42, args=args(tmp_out))


def test_hard_labels_without_labels_in_the_data(tmp_out):
    trainer = DistillationTrainer(
        model=bert(),
        teacher_model=bert(),
        args=args(tmp_out, hard_label_weight=1.0),
        train_dataset=text_dataset(16).remove_columns("labels"),
    )
    with pytest.raises(ValueError, match="hard_label_weight > 0 but the batch has no labels"):
        trainer.train()


def test_non_finite_loss_stops_with_step_and_hint_and_no_update(tmp_out):
    torch.manual_seed(0)
    teacher, student = ViTForImageClassification(vit_config()), ViTForImageClassification(vit_config())
    data = image_dataset(16)
    data = data.map(lambda row: {"pixel_values": torch.full_like(row["pixel_values"], float("nan"))})
    before = {k: v.clone() for k, v in student.state_dict().items()}
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args(tmp_out), train_dataset=data)
    with pytest.raises(FloatingPointError, match="Non-finite distillation loss at step 0.*Lower learning_rate"):
        trainer.train()
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
