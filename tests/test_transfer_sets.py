"""Teacher-labelled transfer sets: the stored logits are the teacher's, and distilling from them is the same
as distilling from a live teacher (same loss, same gradient); MSE-on-logits KD; the refusals."""

import pytest
import torch
from conftest import VOCAB, bert_config, text_dataset
from datasets import load_from_disk
from transformers import BertForSequenceClassification, default_data_collator

from hf_compress import DistillationConfig, DistillationTrainer, RNNStudentConfig, RNNStudentForSequenceClassification
from hf_compress.data import label_with_teacher
from hf_compress.distill import losses


def teacher():
    torch.manual_seed(0)
    return BertForSequenceClassification(bert_config()).eval()


def rnn_student():
    torch.manual_seed(1)
    config = RNNStudentConfig(vocab_size=VOCAB, embedding_size=8, hidden_size=6, num_labels=3, dropout=0.0)
    return RNNStudentForSequenceClassification(config)


def args(tmp_out, **kw):
    base = dict(output_dir=tmp_out, max_steps=3, per_device_train_batch_size=8, learning_rate=1e-3, report_to=[],
                save_strategy="no", use_cpu=True, seed=0, dataloader_pin_memory=False, logging_steps=1)  # fmt: skip
    return DistillationConfig(**{**base, **kw})


def test_label_with_teacher_stores_the_teachers_logits_and_saves(tmp_path):
    model = teacher()
    data = text_dataset(20)
    labelled = label_with_teacher(model, data, batch_size=6)
    assert labelled.column_names == [*data.column_names, "teacher_logits"]
    batch = default_data_collator([data[i] for i in range(20)])
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(torch.tensor(labelled["teacher_logits"]), expected, atol=1e-5, rtol=0)
    labelled.save_to_disk(str(tmp_path / "transfer"))
    assert load_from_disk(str(tmp_path / "transfer"))["teacher_logits"] == labelled["teacher_logits"]
    with pytest.raises(ValueError, match="already has a 'teacher_logits' column"):
        label_with_teacher(model, labelled)
    with pytest.raises(ValueError, match="needs a tokenized dataset with input_ids"):
        label_with_teacher(model, data.remove_columns("input_ids"))


@pytest.mark.parametrize(
    "settings",
    [dict(kd_loss_type="soft"), dict(kd_loss_type="mse", hard_label_weight=0.5), dict(kd_loss_type="hard")],
)
def test_cached_logits_equal_a_live_teacher(tmp_path, settings):
    """Same batch, same student weights: the loss and every gradient agree with and without the teacher."""
    model = teacher()
    data = text_dataset(16)
    labelled = label_with_teacher(model, data, batch_size=5)  # other batches than the trainer's: must not matter
    results = []
    for teacher_model, dataset in ((model, data), (None, labelled)):
        student = rnn_student()
        trainer = DistillationTrainer(model=student, teacher_model=teacher_model, args=args(str(tmp_path), **settings),
                                      train_dataset=dataset)  # fmt: skip
        batch = next(iter(trainer.get_train_dataloader()))
        assert ("teacher_logits" in batch) == (teacher_model is None)
        loss = trainer.compute_loss(student, trainer._prepare_inputs(batch))
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in student.named_parameters()}))
    (live_loss, live_grads), (cached_loss, cached_grads) = results
    assert live_loss.item() > 0
    torch.testing.assert_close(cached_loss, live_loss, atol=1e-6, rtol=1e-5)
    for name, grad in live_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_training_from_cached_logits_without_a_teacher(tmp_path):
    labelled = label_with_teacher(teacher(), text_dataset(24))
    student = rnn_student()
    before = student.classifier.weight.detach().clone()
    trainer = DistillationTrainer(model=student, args=args(str(tmp_path), kd_loss_type="mse", hard_label_weight=1.0),
                                  train_dataset=labelled)  # fmt: skip
    trainer.train()
    assert not torch.equal(student.classifier.weight, before)
    logs = [entry for entry in trainer.state.log_history if "kd_loss" in entry]
    assert logs and all(entry["kd_loss"] > 0 and entry["hard_label_loss"] > 0 for entry in logs)


def test_cached_logits_refuse_feature_losses(tmp_path):
    labelled = label_with_teacher(teacher(), text_dataset(8))
    with pytest.raises(ValueError, match="teacher_model=None works only with cached teacher logits"):
        DistillationTrainer(model=rnn_student(), args=args(str(tmp_path), hidden_weight=1.0), train_dataset=labelled)
    student = BertForSequenceClassification(bert_config(num_hidden_layers=2))
    trainer = DistillationTrainer(model=student, teacher_model=teacher(), train_dataset=labelled,
                                  args=args(str(tmp_path), hidden_weight=1.0))  # fmt: skip
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with pytest.raises(ValueError, match="cached 'teacher_logits', which serve prediction KD only"):
        trainer.compute_loss(student, batch)


def test_no_teacher_and_no_cached_logits_is_refused(tmp_path):
    with pytest.raises(ValueError, match="or a train_dataset with a 'teacher_logits' column"):
        DistillationTrainer(model=rnn_student(), args=args(str(tmp_path)), train_dataset=text_dataset(8))
    trainer = DistillationTrainer(model=rnn_student(), args=args(str(tmp_path)),
                                  train_dataset=label_with_teacher(teacher(), text_dataset(8)))  # fmt: skip
    batch = trainer._prepare_inputs(default_data_collator([text_dataset(8)[i] for i in range(4)]))
    with pytest.raises(ValueError, match="no 'teacher_logits' column and the trainer has no teacher_model"):
        trainer.compute_loss(trainer.model, batch)


def test_logit_mse_loss():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    assert losses.logit_mse_loss(t, t).item() == 0.0
    torch.testing.assert_close(losses.logit_mse_loss(s, t), ((s - t) ** 2).mean())
    mask = torch.tensor([True, True, False, False])
    torch.testing.assert_close(losses.logit_mse_loss(s, t, mask), ((s[:2] - t[:2]) ** 2).mean())


def test_hard_label_term_counts_originals_only(tmp_path):
    """Augmented rows carry label -100: the hard-label term is the student's loss on the originals alone."""
    data = label_with_teacher(teacher(), text_dataset(8))
    labels = data["labels"]
    data = data.remove_columns("labels").add_column(
        "labels", [y if i % 2 == 0 else -100 for i, y in enumerate(labels)]
    )
    student = rnn_student()
    trainer = DistillationTrainer(model=student, train_dataset=data,
                                  args=args(str(tmp_path), kd_weight=0.0, hard_label_weight=1.0))  # fmt: skip
    batch = trainer._prepare_inputs(default_data_collator([data[i] for i in range(8)]))
    loss = trainer.compute_loss(student, batch)
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = torch.nn.functional.cross_entropy(logits[0::2], batch["labels"][0::2])
    torch.testing.assert_close(loss, expected)
    only_augmented = {**batch, "labels": torch.full_like(batch["labels"], -100)}
    assert trainer.compute_loss(student, only_augmented).item() == 0.0


def test_labels_only_never_runs_the_teacher(tmp_path):
    model, calls = teacher(), []
    model.register_forward_hook(lambda *_: calls.append(1))
    trainer = DistillationTrainer(model=rnn_student(), teacher_model=model, train_dataset=text_dataset(16),
                                  args=args(str(tmp_path), kd_weight=0.0, hard_label_weight=1.0))  # fmt: skip
    trainer.train()
    assert trainer.state.global_step == 3 and not calls
    DistillationTrainer(model=rnn_student(), train_dataset=text_dataset(16),
                        args=args(str(tmp_path), kd_weight=0.0, hard_label_weight=1.0)).train()  # fmt: skip


def test_token_level_teachers_are_refused():
    from transformers import BertForTokenClassification

    with pytest.raises(ValueError, match="stores one logit vector per row"):
        label_with_teacher(BertForTokenClassification(bert_config()), text_dataset(4))


@pytest.mark.parametrize("loss", ["hidden_weight", "attention_weight", "embedding_weight"])
def test_rnn_students_refuse_feature_losses(tmp_path, loss):
    with pytest.raises(ValueError, match="KD compare the two models layer by layer.*has no transformer layers"):
        DistillationTrainer(model=rnn_student(), teacher_model=teacher(), args=args(str(tmp_path), **{loss: 1.0}))
