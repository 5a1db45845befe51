import os

import numpy as np
import pytest
import torch
from conftest import SEQ, VOCAB, bert_config, image_dataset, text_dataset, train_args, vit_config
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    HfArgumentParser,
    TrainerCallback,
    ViTForImageClassification,
)

from hf_compress import DistillationConfig, DistillationTrainer, make_student
from hf_compress.distill.projection_training import PROJECTIONS_NAME


def config(tmp_out, **kw):
    return train_args(DistillationConfig, tmp_out, **{"max_steps": 3, "logging_steps": 1, **kw})


def teacher_student(student_overrides=None, teacher_cls=BertForSequenceClassification, **teacher_overrides):
    torch.manual_seed(0)
    teacher = teacher_cls(bert_config(**teacher_overrides))
    student = teacher_cls(bert_config(num_hidden_layers=2, **(student_overrides or {})))
    return teacher, student


def logged_keys(trainer):
    keys = set()
    for entry in trainer.state.log_history:
        keys |= set(entry)
    return keys


LOSS_SETTINGS = {
    "soft_kd": dict(kd_weight=1.0),
    "hard_kd": dict(kd_loss_type="hard"),
    "kd_plus_labels": dict(kd_weight=0.5, hard_label_weight=0.5),
    "hidden_mse": dict(kd_weight=0, hidden_weight=1.0),
    "hidden_cosine_last": dict(kd_weight=0, hidden_weight=1.0, hidden_loss_type="cosine", layer_map="last"),
    "attention_kl": dict(kd_weight=0, attention_weight=1.0),
    "attention_mse_explicit_map": dict(kd_weight=0, attention_weight=1.0, attention_loss_type="mse", layer_map="0:3"),
    "embedding": dict(kd_weight=0, embedding_weight=1.0),
    "everything": dict(hard_label_weight=0.3, hidden_weight=1.0, attention_weight=1.0, embedding_weight=0.1),
}
TERM_OF = {
    "kd_weight": "kd_loss",
    "hard_label_weight": "hard_label_loss",
    "hidden_weight": "hidden_loss",
    "attention_weight": "attention_loss",
    "embedding_weight": "embedding_loss",
}


@pytest.mark.parametrize("name", sorted(LOSS_SETTINGS))
def test_each_loss_kind_trains_tiny_bert(tmp_out, name):
    settings = LOSS_SETTINGS[name]
    teacher, student = teacher_student()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=config(tmp_out, **settings), train_dataset=text_dataset()
    )
    trainer.train()
    keys = logged_keys(trainer)
    active = {TERM_OF[w] for w in TERM_OF if settings.get(w, 1.0 if w == "kd_weight" else 0.0) > 0}
    assert active <= keys, f"missing per-term logs: {active - keys}"
    assert not ({*TERM_OF.values()} - active) & keys, "a term with weight 0 was logged"
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items()), "student did not learn"
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items()), "teacher changed"
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert all(np.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)


def test_distillation_lowers_the_kd_loss(tmp_out):
    teacher, student = teacher_student()
    args = config(tmp_out, max_steps=30, hidden_weight=1.0)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset(64))
    trainer.train()
    kd = [e["kd_loss"] for e in trainer.state.log_history if "kd_loss" in e]
    hidden = [e["hidden_loss"] for e in trainer.state.log_history if "hidden_loss" in e]
    assert np.mean(kd[-5:]) < 0.5 * np.mean(kd[:3])
    assert np.mean(hidden[-5:]) < np.mean(hidden[:3])


def test_projections_train_and_are_not_in_the_saved_student(tmp_out):
    teacher, student = teacher_student({"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32})
    args = config(tmp_out, hidden_weight=1.0, embedding_weight=1.0, attention_weight=1.0, attention_head_mode="mean")
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset())
    proj_before = {k: v.clone() for k, v in trainer._projections.state_dict().items()}
    assert sorted(trainer._projections.maps.keys()) == ["0", "1", "embedding"]
    trainer.train()
    assert any(not torch.equal(proj_before[k], v) for k, v in trainer._projections.state_dict().items())
    save_dir = os.path.join(tmp_out, "student")
    trainer.save_model(save_dir)
    assert not os.path.exists(os.path.join(save_dir, PROJECTIONS_NAME))
    saved_keys = load_file(os.path.join(save_dir, "model.safetensors")).keys()
    assert not [k for k in saved_keys if "maps" in k or "projection" in k]
    reloaded = AutoModelForSequenceClassification.from_pretrained(save_dir).eval()
    student.eval()
    batch = text_dataset(4)[:4]
    ids, mask = torch.tensor(batch["input_ids"]), torch.tensor(batch["attention_mask"])
    torch.testing.assert_close(reloaded(input_ids=ids, attention_mask=mask).logits, student(ids, mask).logits)
    assert reloaded.config.to_dict()["hidden_size"] == 16


def test_evaluation_reports_student_metrics_and_terms(tmp_out):
    teacher, student = teacher_student()

    def accuracy(pred):
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    args = config(tmp_out, hidden_weight=1.0)
    data = text_dataset(24, seed=3)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, eval_dataset=data, compute_metrics=accuracy
    )
    metrics = trainer.evaluate()
    student.eval()
    logits = student(torch.tensor(data["input_ids"]), torch.tensor(data["attention_mask"])).logits
    expected = float((logits.argmax(-1).numpy() == np.array(data["labels"])).mean())
    assert metrics["eval_accuracy"] == pytest.approx(expected)
    assert {"eval_loss", "eval_kd_loss", "eval_hidden_loss"} <= set(metrics)
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_kd_loss"] + metrics["eval_hidden_loss"], rel=1e-4)


def _one_step_weights(tmp_out, batch, accumulation):
    teacher, student = teacher_student()
    args = config(
        tmp_out,
        max_steps=1,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        hard_label_weight=0.5,
        hidden_weight=1.0,
        attention_weight=1.0,
        max_grad_norm=0,
        train_sampling_strategy="sequential",
    )
    data = text_dataset(8, padded=False)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    trainer.train()
    return {k: v.clone() for k, v in student.state_dict().items()}


def test_gradient_accumulation_matches_full_batch(tmp_out):
    full = _one_step_weights(tmp_out, batch=8, accumulation=1)
    accumulated = _one_step_weights(tmp_out, batch=4, accumulation=2)
    start = teacher_student()[1].state_dict()
    assert any(not torch.allclose(full[k], start[k]) for k in full)
    for key in full:
        torch.testing.assert_close(accumulated[key], full[key], rtol=1e-4, atol=1e-6)


def test_resume_restores_projections_and_matches_uninterrupted_run(tmp_path):
    class StopAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                control.should_training_stop = True

    def run(out, resume=None, callbacks=None):
        teacher, student = teacher_student({"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32})
        args = config(out, max_steps=4, hidden_weight=1.0, save_strategy="steps", save_steps=2)
        trainer = DistillationTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=text_dataset(), callbacks=callbacks
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run(str(tmp_path / "a"))
    run(str(tmp_path / "b"), callbacks=[StopAfter()])  # interrupted right after the step-2 checkpoint
    checkpoint = str(tmp_path / "b" / "checkpoint-2")
    assert os.path.isfile(os.path.join(checkpoint, PROJECTIONS_NAME))
    resumed = run(str(tmp_path / "b"), resume=checkpoint)
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)
    for key, value in straight._projections.state_dict().items():
        torch.testing.assert_close(resumed._projections.state_dict()[key], value)


def test_resume_from_checkpoint_without_projections_is_an_error(tmp_path):
    teacher, student = teacher_student({"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32})
    args = config(str(tmp_path / "a"), max_steps=2, hidden_weight=1.0, save_strategy="steps", save_steps=2)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset())
    trainer.train()
    os.remove(tmp_path / "a" / "checkpoint-2" / PROJECTIONS_NAME)
    args = config(str(tmp_path / "a"), max_steps=4, hidden_weight=1.0)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset())
    with pytest.raises(FileNotFoundError, match="has no distillation_projections"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))


def test_token_classification_counts_only_labelled_tokens(tmp_out):
    teacher, student = teacher_student(teacher_cls=BertForTokenClassification)
    data = text_dataset(16)
    labels = [
        [(i + j) % 3 if m else -100 for j, m in enumerate(mask)] for i, mask in enumerate(data["attention_mask"])
    ]
    data = data.remove_columns("labels").add_column("labels", labels)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=config(tmp_out, hidden_weight=1.0), train_dataset=data
    )
    trainer.train()
    batch = {k: torch.tensor(v) for k, v in data[:4].items()}
    loss_before = trainer.compute_loss(student.eval(), batch)
    changed = dict(batch)
    changed["input_ids"] = batch["input_ids"].clone()
    assert trainer._token_level
    # Logits at label -100 positions must not count: KD over the same labelled positions is unchanged
    # when the teacher disagrees only at ignored positions.
    s_logits, t_logits = torch.randn(2, SEQ, 3), torch.randn(2, SEQ, 3)
    labels = torch.full((2, SEQ), -100)
    labels[:, :3] = 1
    t_other = t_logits.clone()
    t_other[:, 3:] = 10.0
    first = trainer._prediction_loss(s_logits, t_logits, labels, None)
    assert first == pytest.approx(trainer._prediction_loss(s_logits, t_other, labels, None).item())
    assert torch.isfinite(loss_before)


def test_regression_head_uses_mse(tmp_out):
    teacher, student = teacher_student(num_labels=1)
    student.config.num_labels = 1
    student = BertForSequenceClassification(bert_config(num_hidden_layers=2, num_labels=1))
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=config(tmp_out, hard_label_weight=1.0),
        train_dataset=text_dataset(regression=True),
    )
    assert trainer._kd_kind == "regression"
    s, t = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [0.0]])
    assert trainer._prediction_loss(s, t, None, None).item() == pytest.approx(2.5)
    trainer.train()


def _tiny_tokenizer(tmp_path):
    from transformers import BertTokenizerFast

    words = [f"w{i}" for i in range(VOCAB - 5)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}), words


def test_task_agnostic_masked_lm_distillation(tmp_path):
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling

    tokenizer, words = _tiny_tokenizer(tmp_path)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=rng.integers(4, 10))) for _ in range(32)]
    data = Dataset.from_dict({"text": texts}).map(
        lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"]
    )
    teacher, student = teacher_student(teacher_cls=BertForMaskedLM)
    teacher.config.pad_token_id = student.config.pad_token_id = tokenizer.pad_token_id
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3)
    args = config(str(tmp_path / "out"), hidden_weight=1.0, attention_weight=1.0, hard_label_weight=1.0)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        data_collator=collator,
        processing_class=tokenizer,
    )
    trainer.train()
    assert {"kd_loss", "hidden_loss", "attention_loss", "hard_label_loss"} <= logged_keys(trainer)
    metrics = trainer.evaluate()
    assert np.isfinite(metrics["eval_kd_loss"])
    trainer.save_model(str(tmp_path / "saved"))
    assert os.path.isfile(tmp_path / "saved" / "tokenizer.json")


def test_task_agnostic_bare_encoder_without_labels(tmp_out):
    teacher, student = teacher_student(teacher_cls=BertModel)
    data = text_dataset(16).remove_columns("labels")
    args = config(tmp_out, kd_weight=0, hidden_weight=1.0, attention_weight=1.0, embedding_weight=1.0)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data, eval_dataset=data
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] > 0 and "eval_attention_loss" in metrics


@pytest.mark.parametrize(
    "settings",
    [
        dict(hidden_weight=1.0, attention_weight=1.0),
        dict(kd_loss_type="hard", hard_label_weight=0.5),
    ],
    ids=["vit_hidden_attention", "vit_deit_hard"],
)
def test_vit_distillation(tmp_out, settings):
    torch.manual_seed(0)
    teacher = ViTForImageClassification(vit_config())
    student = make_student(teacher, layers=[1, 3])
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=config(tmp_out, **settings), train_dataset=image_dataset()
    )
    trainer.train()
    assert "kd_loss" in logged_keys(trainer)
    if settings.get("kd_loss_type") == "hard":
        s, t = torch.randn(4, 5), torch.randn(4, 5)
        expected = torch.nn.functional.cross_entropy(s, t.argmax(-1))
        assert trainer._prediction_loss(s, t, None, None).item() == pytest.approx(expected.item())


def test_vit_student_of_other_width(tmp_out):
    torch.manual_seed(0)
    teacher = ViTForImageClassification(vit_config())
    student = ViTForImageClassification(vit_config(hidden_size=16, num_attention_heads=2, num_hidden_layers=2))
    args = config(tmp_out, hidden_weight=1.0, attention_weight=1.0, attention_head_mode="mean")
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=image_dataset())
    trainer.train()
    assert {"hidden_loss", "attention_loss"} <= logged_keys(trainer)


def test_bf16_training_runs(tmp_out):
    teacher, student = teacher_student()
    args = config(tmp_out, bf16=True, hidden_weight=1.0, attention_weight=1.0)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset())
    trainer.train()
    assert all(np.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)


def test_teacher_given_as_a_path(tmp_path):
    teacher, student = teacher_student()
    teacher.save_pretrained(tmp_path / "teacher")
    args = config(str(tmp_path / "out"))
    trainer = DistillationTrainer(model=student, teacher_model=str(tmp_path / "teacher"), args=args)
    assert isinstance(trainer.teacher, BertForSequenceClassification)
    assert not trainer.teacher.training and not any(p.requires_grad for p in trainer.teacher.parameters())


def test_attention_kd_switches_only_inside_the_trainer(tmp_out):
    teacher, student = teacher_student()
    seen = []

    class Spy(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append((student.config._attn_implementation, teacher.config._attn_implementation))

    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=config(tmp_out, max_steps=2),
                                  train_dataset=text_dataset(16), callbacks=[Spy()])  # fmt: skip
    trainer.train()
    assert seen == [("sdpa", "sdpa")] * 2  # no attention KD: untouched
    seen.clear()
    args = config(tmp_out, max_steps=2, attention_weight=1.0)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset(16),
                                  eval_dataset=text_dataset(8), callbacks=[Spy()])  # fmt: skip
    assert student.config._attn_implementation == teacher.config._attn_implementation == "sdpa"
    trainer.train()
    assert seen == [("hf_compress_kd", "hf_compress_kd")] * 2  # maps during training ...
    assert student.config._attn_implementation == teacher.config._attn_implementation == "sdpa"  # ... not after
    assert trainer.evaluate()["eval_attention_loss"] > 0
    assert student.config._attn_implementation == teacher.config._attn_implementation == "sdpa"
    with trainer.attention_maps():  # for calling compute_loss / training_step directly
        assert student.config._attn_implementation == "hf_compress_kd"
        assert trainer.compute_loss(student, dict(text_dataset(4).with_format("torch")[:])) > 0


def test_config_parses_from_command_line(tmp_out):
    (args,) = HfArgumentParser(DistillationConfig).parse_args_into_dataclasses(
        [
            "--output_dir",
            tmp_out,
            "--temperature",
            "4",
            "--hidden_weight",
            "0.5",
            "--layer_map",
            "1,3",
            "--report_to",
            "none",
        ]
    )
    assert args.temperature == 4.0 and args.hidden_weight == 0.5
    assert args.layer_map_spec.teacher_layers == (1, 3)


def test_kd_attention_masks_padding_and_matches_default_attention():
    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config()).eval()
    ids = torch.randint(1, VOCAB, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits
        model.set_attn_implementation("hf_compress_kd")
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert out.attentions[0][1, :, :, 5:].abs().max() == 0  # padded keys get no attention
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 9))
    torch.testing.assert_close(out.logits, reference, rtol=1e-5, atol=1e-6)
