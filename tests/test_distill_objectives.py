"""Distillation objectives in detail: gradient accumulation with token-level terms, TinyBERT's attention-score
loss, and the layer map of a `make_student` student."""

import numpy as np
import pytest
import torch
from conftest import bert_config, text_dataset
from datasets import Dataset
from test_distill_trainer import config, teacher_student
from transformers import AutoModelForSequenceClassification, BertForMaskedLM, BertForSequenceClassification, BertModel

from hf_compress import DistillationTrainer, HomoDistilConfig, HomoDistilTrainer, make_student
from hf_compress.distill import losses
from hf_compress.distill.attention import ATTN_SCORES_IMPLEMENTATION
from hf_compress.distill.matching import TEACHER_LAYERS_ATTR, parse_layer_map, resolve_layer_map

# ---- 5. 1 x 8 == 2 x 4 accumulated, with micro-batches of different token counts ----------------------------

GA_SETTINGS = {
    "hidden_attention_kl_embedding": dict(
        kd_weight=1.0, hidden_weight=1.0, attention_weight=1.0, embedding_weight=1.0
    ),
    "attention_mse": dict(kd_weight=0, attention_weight=1.0, attention_loss_type="mse"),
    "attention_scores": dict(kd_weight=0, attention_weight=0.1, attention_loss_type="mse_scores"),
}


def _unequal_lengths(n=8):
    """Sentences of 2..12 real tokens: the first four much shorter than the last four."""
    data = text_dataset(n, padded=False)
    ids = np.array(data["input_ids"])
    mask = np.ones_like(ids)
    for i, length in enumerate([2, 3, 2, 4, 12, 11, 12, 10][:n]):
        mask[i, length:] = 0
        ids[i, length:] = 0
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": data["labels"]})


def _step(tmp_out, data, batch, accumulation, teacher_cls=BertForSequenceClassification, collator=None, **kw):
    teacher, student = teacher_student(teacher_cls=teacher_cls)
    args = config(
        tmp_out,
        max_steps=1,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        max_grad_norm=0,
        train_sampling_strategy="sequential",
        **kw,
    )
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data, data_collator=collator
    )
    trainer.train()
    return {k: v.clone() for k, v in student.state_dict().items()}


@pytest.mark.parametrize("name", sorted(GA_SETTINGS))
def test_accumulation_equals_full_batch_with_unequal_token_counts(tmp_out, name):
    data = _unequal_lengths()
    full = _step(tmp_out, data, 8, 1, **GA_SETTINGS[name])
    accumulated = _step(tmp_out, data, 4, 2, **GA_SETTINGS[name])
    start = teacher_student()[1].state_dict()
    assert any(not torch.allclose(full[k], start[k]) for k in full)
    for key in full:
        torch.testing.assert_close(accumulated[key], full[key], rtol=1e-4, atol=1e-6)


def test_masked_lm_accumulation_counts_masked_positions_over_the_accumulated_batch(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 60, size=(8, 10))
    labels = np.full((8, 10), -100)
    for i, count in enumerate([1, 1, 1, 1, 5, 6, 4, 5]):  # few masked positions first, many later
        labels[i, :count] = ids[i, :count]
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})
    kw = dict(kd_weight=1.0, hard_label_weight=1.0)
    full = _step(str(tmp_path / "a"), data, 8, 1, BertForMaskedLM, **kw)
    accumulated = _step(str(tmp_path / "b"), data, 4, 2, BertForMaskedLM, **kw)
    for key in full:
        torch.testing.assert_close(accumulated[key], full[key], rtol=1e-4, atol=1e-6)


# ---- 8. TinyBERT's attention loss on pre-softmax scores --------------------------------------------------------


def test_scores_implementation_returns_pre_softmax_scores():
    torch.manual_seed(0)
    model = BertModel(bert_config(num_hidden_layers=1)).eval()
    model.set_attn_implementation(ATTN_SCORES_IMPLEMENTATION)
    ids = torch.randint(1, 64, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        attention = model.encoder.layer[0].attention.self
        x = out.hidden_states[0]
        q = attention.query(x).view(2, 7, 4, 8).transpose(1, 2)
        k = attention.key(x).view(2, 7, 4, 8).transpose(1, 2)
        expected = q @ k.transpose(-1, -2) / 8**0.5
    torch.testing.assert_close(out.attentions[0], expected)
    model.set_attn_implementation("eager")
    with torch.no_grad():  # and the layer computes what default attention computes
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).last_hidden_state, out.last_hidden_state)


def test_mse_scores_loss_ignores_padded_pairs_and_is_zero_on_equal_scores():
    s, t = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    assert losses.attention_loss(t, t, mask, "mse_scores") == 0
    changed = s.clone()
    changed[0, :, 3:] += 100.0  # padded query rows of sample 0
    changed[0, :, :, 3:] -= 100.0  # padded key columns
    torch.testing.assert_close(
        losses.attention_loss(changed, t, mask, "mse_scores"), losses.attention_loss(s, t, mask, "mse_scores")
    )


def test_attention_scores_distillation_trains(tmp_out):
    teacher, student = teacher_student()
    args = config(tmp_out, kd_weight=0, attention_weight=0.1, attention_loss_type="mse_scores", max_steps=4)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset(32))
    trainer.train()
    values = [e["attention_loss"] for e in trainer.state.log_history if "attention_loss" in e]
    assert len(values) == 4 and values[-1] < values[0]
    assert student.config._attn_implementation != ATTN_SCORES_IMPLEMENTATION  # switched back after training


# ---- 9. a make_student student learns from the teacher layers it was copied from -------------------------------


def test_make_student_records_its_teacher_layers_and_the_default_map_uses_them(tmp_path):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config(num_hidden_layers=6))
    student = make_student(teacher, layers=[0, 2, 4])
    assert getattr(student.config, TEACHER_LAYERS_ATTR) == {"layers": [0, 2, 4], "num_layers": 6}
    args = config(str(tmp_path / "a"), hidden_weight=1.0)
    assert DistillationTrainer(model=student, teacher_model=teacher, args=args).layer_pairs == [(0, 0), (1, 2), (2, 4)]
    uniform = config(str(tmp_path / "b"), hidden_weight=1.0, layer_map="uniform")
    assert DistillationTrainer(model=student, teacher_model=teacher, args=uniform).layer_pairs == [
        (0, 1),
        (1, 3),
        (2, 5),
    ]
    student.save_pretrained(tmp_path / "saved")  # the record survives, and plain transformers loads the model
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    assert getattr(reloaded.config, TEACHER_LAYERS_ATTR) == {"layers": [0, 2, 4], "num_layers": 6}


def test_an_encoder_student_ends_at_the_teachers_last_layer(tmp_path):
    """Without a task head the student's last states are its output (an embedding): by default they learn the
    teacher's last layer, not the layer they were copied from; the earlier layers keep their record."""
    from transformers import BertModel

    torch.manual_seed(0)
    teacher = BertModel(bert_config(num_hidden_layers=6))
    student = make_student(teacher, layers=[0, 2, 4])
    args = config(str(tmp_path / "a"), hidden_weight=1.0, kd_weight=0.0)
    assert DistillationTrainer(model=student, teacher_model=teacher, args=args).layer_pairs == [(0, 0), (1, 2), (2, 5)]
    explicit = config(str(tmp_path / "b"), hidden_weight=1.0, kd_weight=0.0, layer_map="0,2,4")
    assert DistillationTrainer(model=student, teacher_model=teacher, args=explicit).layer_pairs == [
        (0, 0),
        (1, 2),
        (2, 4),
    ]


def test_a_record_that_does_not_describe_this_teacher_falls_back_to_uniform(tmp_path):
    torch.manual_seed(0)
    grand_teacher = BertForSequenceClassification(bert_config(num_hidden_layers=6))
    student = make_student(grand_teacher, layers=[1, 3, 5])
    # HomoDistil prunes a copy of the student, taught by the student: identity map, not the grand-teacher's layers.
    args = HomoDistilConfig(
        output_dir=str(tmp_path), hidden_weight=1.0, target_intermediate_size=32, prune_end_step=2, use_cpu=True
    )
    assert HomoDistilTrainer(teacher_model=student, args=args).layer_pairs == [(0, 0), (1, 1), (2, 2)]
    record = {"layers": [1, 3, 5], "num_layers": 6}
    assert resolve_layer_map(parse_layer_map("auto"), 3, 6, record) == [(0, 1), (1, 3), (2, 5)]
    assert resolve_layer_map(parse_layer_map("auto"), 3, 6, {"layers": [0, 9, 2], "num_layers": 6}) == [
        (0, 1),
        (1, 3),
        (2, 5),
    ]
