"""DeiT as DeiT did it: a convnet (or any image classifier) teaching a ViT, and the two-head distillation-token
student — built, trained, saved, reloaded, pruned, quantized, run in a pipeline and run from the shipped recipe."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features
from transformers import (
    AutoModelForImageClassification,
    BeitConfig,
    DeiTConfig,
    ResNetConfig,
    ResNetForImageClassification,
    ViTForImageClassification,
    ViTImageProcessor,
)

from hf_compress import (
    DistillationConfig,
    DistillationTrainer,
    HomoDistilConfig,
    HomoDistilTrainer,
    make_student,
    quantize,
)
from hf_compress.data.teacher_pixels import TEACHER_PIXEL_VALUES, add_teacher_pixels
from hf_compress.distill import losses
from hf_compress.distill.deit_student import make_deit_student
from hf_compress.distill.rnn_stage import student_spec
from hf_compress.quant import QuantizationConfig
from tests.conftest import PRUNE_DEFAULTS, image_dataset, train_args, vit_config
from tests.tiny_assets import run_cli

LABELS = {"num_labels": 5, "id2label": {i: f"c{i}" for i in range(5)}, "label2id": {f"c{i}": i for i in range(5)}}
DEIT = dict(kd_loss_type="hard", kd_weight=0.5, hard_label_weight=0.5)


def vit(**overrides):
    torch.manual_seed(0)
    return ViTForImageClassification(vit_config(**LABELS, **overrides)).eval()


def convnet(channels: int = 1):
    torch.manual_seed(1)
    config = ResNetConfig(num_channels=channels, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                          layer_type="basic", **LABELS)  # fmt: skip
    return ResNetForImageClassification(config).eval()


# ---- the student ---------------------------------------------------------------------------------------------


def test_student_copies_the_vit_with_a_distillation_token():
    source = vit()
    student = make_deit_student(source, [1, 3])
    assert type(student).__name__ == "DeiTForImageClassificationWithTeacher"
    assert student.config.num_hidden_layers == 2 and student.config.id2label == source.config.id2label
    s, t = student.state_dict(), source.state_dict()
    assert torch.equal(s["deit.layers.0.attention.q_proj.weight"], t["vit.layers.1.attention.q_proj.weight"])
    assert torch.equal(s["deit.layers.1.mlp.fc2.weight"], t["vit.layers.3.mlp.fc2.weight"])
    for head in ("cls_classifier", "distillation_classifier"):
        assert torch.equal(s[f"{head}.weight"], t["classifier.weight"])
    assert torch.equal(s["deit.embeddings.distillation_token"], t["vit.embeddings.cls_token"])
    positions = s["deit.embeddings.position_embeddings"]  # [class, distillation, patches...]
    assert positions.shape[1] == t["vit.embeddings.position_embeddings"].shape[1] + 1
    assert torch.equal(positions[:, 1], positions[:, 0])
    assert torch.equal(positions[:, 2:], t["vit.embeddings.position_embeddings"][:, 1:])


def test_a_full_copy_predicts_as_its_source():
    """The duplicated class token only reweights attention a little: the copy agrees with its source."""
    source = vit()
    student = make_deit_student(source).eval()
    pixels = torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = student(pixel_values=pixels).logits, source(pixel_values=pixels).logits
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() >= 0.9
    assert (ours - theirs).abs().max() < 0.05 * theirs.abs().max()


def test_make_student_builds_the_deit_student_too():
    source = vit()
    student = make_student(source, [0, 2], distillation_token=True)
    assert type(student).__name__ == "DeiTForImageClassificationWithTeacher" and student.config.num_hidden_layers == 2
    assert type(make_student(vit_config(**LABELS), distillation_token=True)).__name__ == type(student).__name__
    with pytest.raises(TypeError, match="a config builds a new one"):
        make_student(vit_config(**LABELS), [0])
    with pytest.raises(ValueError, match="needs the teacher layers to keep"):
        make_student(source)


def test_student_from_a_config_is_new_and_two_headed():
    student = make_deit_student(vit_config(num_hidden_layers=2, **LABELS))
    assert isinstance(student.config, DeiTConfig) and student.config.num_hidden_layers == 2
    assert student.config.architectures == ["DeiTForImageClassificationWithTeacher"]
    assert student.config.num_labels == 5


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            BeitConfig(
                image_size=16,
                patch_size=4,
                num_channels=1,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
            ),
            "ViT or DeiT config",
        ),  # fmt: skip
        (ResNetConfig(num_channels=1), "ViT or DeiT config"),
    ],
)
def test_student_refuses_other_layouts(source, message):
    with pytest.raises(ValueError, match=message):
        make_deit_student(source)


def test_student_refuses_bad_layers():
    with pytest.raises(ValueError, match="out of range"):
        make_deit_student(vit(), [0, 9])
    with pytest.raises(ValueError, match="strictly increasing"):
        make_deit_student(vit(), [2, 1])


# ---- training: a convnet teacher, two heads, one loss each ---------------------------------------------------


def test_convnet_teaches_the_distillation_head_and_labels_the_class_head(tmp_path):
    """kd_loss is hard KD of the distillation head against the convnet's argmax, hard_label_loss the class head's
    cross-entropy on the labels, each computed here from the two models' outputs."""
    student, teacher = make_deit_student(vit()), convnet()
    data = image_dataset(16)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=train_args(DistillationConfig, tmp_path,
                                  **DEIT), train_dataset=data)  # fmt: skip
    batch = {"pixel_values": data["pixel_values"][:8], "labels": data["labels"][:8]}
    student.eval()
    with torch.no_grad():
        trainer.compute_loss(student, batch)
        out, t_logits = student(pixel_values=batch["pixel_values"]), teacher(pixel_values=batch["pixel_values"]).logits
    terms = trainer._reduce_terms("eval")
    expected_kd = losses.hard_kd_loss(out.distillation_logits, t_logits, None).item()
    expected_ce = torch.nn.functional.cross_entropy(out.cls_logits, batch["labels"]).item()
    assert terms["kd_loss"] == pytest.approx(expected_kd, rel=1e-4)
    assert terms["hard_label_loss"] == pytest.approx(expected_ce, rel=1e-4)
    assert expected_kd != pytest.approx(expected_ce, rel=1e-3)  # the two heads' targets really differ here


def test_deit_student_trains_evaluates_saves_and_reloads(tmp_path):
    student, teacher = make_deit_student(vit()), convnet()
    data = image_dataset(32)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=train_args(DistillationConfig, tmp_path, **DEIT),
        train_dataset=data, eval_dataset=data,
        compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
    )  # fmt: skip
    before = student.distillation_classifier.weight.detach().clone()
    trainer.train()
    assert not torch.equal(before, student.distillation_classifier.weight)
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and "eval_kd_loss" in metrics  # labels reached the metrics
    student.save_pretrained(tmp_path / "student")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "student").eval()
    assert type(reloaded).__name__ == "DeiTForImageClassificationWithTeacher"
    pixels = data["pixel_values"][:4]
    with torch.no_grad():
        out = student.eval()(pixel_values=pixels)
        assert torch.equal(reloaded(pixel_values=pixels).logits, out.logits)
        assert torch.allclose(out.logits, (out.cls_logits + out.distillation_logits) / 2)


def test_deit_student_runs_in_a_pipeline(tmp_path):
    from PIL import Image
    from transformers import pipeline

    student = make_deit_student(vit(num_channels=3))
    student.save_pretrained(tmp_path)
    processor = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    run = pipeline("image-classification", model=str(tmp_path), image_processor=processor)
    result = run(Image.new("RGB", (20, 20), (120, 30, 200)))
    assert result and result[0]["label"] in LABELS["label2id"]


def test_homodistil_and_int8_work_on_the_deit_student(tmp_path):
    """HomoDistil slices both heads and the distillation token; hidden-state KD against a one-token ViT teacher
    compares the teacher's tokens only. The int8 model saves and reloads."""
    teacher = vit()
    args = train_args(HomoDistilConfig, tmp_path, **DEIT, **PRUNE_DEFAULTS)
    trainer = HomoDistilTrainer(model=make_deit_student(teacher), teacher_model=teacher, args=args,
                                train_dataset=image_dataset(32))  # fmt: skip
    trainer.train()
    pruned = trainer.model
    assert pruned.config.hidden_size == 16 and pruned.cls_classifier.in_features == 16
    assert pruned.deit.embeddings.distillation_token.shape[-1] == 16
    q = quantize(pruned, QuantizationConfig(method="int8_dynamic"))
    q.save_pretrained(tmp_path / "int8")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "int8")
    pixels = torch.randn(2, 1, 16, 16)
    assert torch.equal(reloaded(pixel_values=pixels).logits, q(pixel_values=pixels).logits)


# ---- refusals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["hidden_weight", "attention_weight", "embedding_weight"])
def test_feature_losses_refuse_a_convnet_teacher(tmp_path, loss):
    with pytest.raises(ValueError, match=r"teacher ResNetForImageClassification \(resnet\) has no transformer layers"):
        DistillationTrainer(model=make_deit_student(vit()), teacher_model=convnet(),
                            args=train_args(DistillationConfig, tmp_path, **DEIT, **{loss: 1.0}))  # fmt: skip


@pytest.mark.parametrize("zero", ["kd_weight", "hard_label_weight"])
def test_two_heads_need_both_signals(tmp_path, zero):
    weights = {**DEIT, zero: 0.0}
    with pytest.raises(ValueError, match=rf"both weights must be > 0 \({zero} is 0\)"):
        DistillationTrainer(model=make_deit_student(vit()), teacher_model=convnet(),
                            args=train_args(DistillationConfig, tmp_path, **weights))  # fmt: skip


def test_a_regression_head_with_two_heads_is_refused(tmp_path):
    student = make_deit_student(vit_config(num_labels=1))
    teacher = ViTForImageClassification(vit_config(num_labels=1))
    with pytest.raises(ValueError, match="a regression head \\(num_labels=1\\) has no classes to distil"):
        args = train_args(DistillationConfig, tmp_path, **DEIT)
        DistillationTrainer(model=student, teacher_model=teacher, args=args)


def test_the_class_head_needs_labels(tmp_path):
    trainer = DistillationTrainer(model=make_deit_student(vit()), teacher_model=convnet(),
                                  args=train_args(DistillationConfig, tmp_path, **DEIT))  # fmt: skip
    with pytest.raises(ValueError, match="a DeiT student's class head learns from the labels"):
        trainer.compute_loss(trainer.model, {"pixel_values": torch.randn(2, 1, 16, 16)})


def test_attention_kd_refuses_a_token_the_teacher_lacks(tmp_path):
    with pytest.raises(ValueError, match="distillation token that the teacher ViTForImageClassification lacks"):
        DistillationTrainer(model=make_deit_student(vit()), teacher_model=vit(),
                            args=train_args(DistillationConfig, tmp_path, **DEIT, attention_weight=1.0))  # fmt: skip


def test_different_inputs_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"num_channels=3, the student 1.*add_teacher_pixels"):
        DistillationTrainer(model=make_deit_student(vit()), teacher_model=convnet(channels=3),
                            args=train_args(DistillationConfig, tmp_path, **DEIT))  # fmt: skip
    with pytest.raises(ValueError, match=r"image_size=32, the student 16.*add_teacher_pixels"):
        DistillationTrainer(model=make_deit_student(vit()), teacher_model=vit(image_size=32),
                            args=train_args(DistillationConfig, tmp_path, **DEIT))  # fmt: skip


def test_convnets_read_any_size_so_only_channels_are_compared(tmp_path):
    student = make_deit_student(vit())
    teacher = convnet()
    teacher.config.image_size = 224  # ConvNeXt's configs carry a nominal size its layers never use
    DistillationTrainer(model=student, teacher_model=teacher, args=train_args(DistillationConfig, tmp_path, **DEIT))


# ---- each model its own preprocessing ----------------------------------------------------------------------


def test_teacher_pixels_reach_the_teacher(tmp_path):
    """A grey 16 x 16 student and an RGB 24 x 24 teacher, each image preprocessed by each model's processor."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)) for _ in range(16)]
    raw = Dataset.from_dict({"image": images, "labels": [i % 5 for i in range(16)]})
    student_processor = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5], image_std=[0.5],
                                          do_convert_rgb=False)  # fmt: skip
    grey = type("Grey", (), {"__call__": lambda self, images, return_tensors: student_processor(
        images=[img.convert("L") for img in images], return_tensors=return_tensors)})()  # fmt: skip
    teacher_processor = ViTImageProcessor(size={"height": 24, "width": 24}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    data = add_teacher_pixels(raw, grey, teacher_processor)
    assert tuple(data[0]["pixel_values"].shape) == (1, 16, 16)
    assert tuple(data[0][TEACHER_PIXEL_VALUES].shape) == (3, 24, 24)
    teacher = vit(image_size=24, num_channels=3)
    seen = []
    teacher.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["pixel_values"].shape),
                                      with_kwargs=True)  # fmt: skip
    trainer = DistillationTrainer(model=make_deit_student(vit()), teacher_model=teacher,
                                  args=train_args(DistillationConfig, tmp_path, **DEIT, max_steps=2),
                                  train_dataset=data)  # fmt: skip
    trainer.train()
    assert seen and all(tuple(shape[1:]) == (3, 24, 24) for shape in seen)


def test_add_teacher_pixels_names_a_missing_column():
    with pytest.raises(ValueError, match="has no column 'img'"):
        add_teacher_pixels(Dataset.from_dict({"image": [1]}), None, None, image_column="img")


# ---- recipes -----------------------------------------------------------------------------------------------


def test_recipe_student_spec_is_checked_at_parse_time():
    spec = student_spec({"student": {"type": "vit", "config": {"hidden_size": 32, "num_attention_heads": 4}}})
    assert spec.distillation_token is True
    with pytest.raises(ValueError, match=r"'hidden_szie' \(did you mean 'hidden_size'\?\)"):
        student_spec({"student": {"type": "vit", "config": {"hidden_szie": 32}}})
    with pytest.raises(ValueError, match="model_type must be one of"):
        student_spec({"student": {"type": "vit", "config": {"model_type": "beit"}}})
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
        student_spec({"student": {"type": "vit", "config": {"hidden_size": 30, "num_attention_heads": 4}}})
    with pytest.raises(ValueError, match="unknown key"):
        student_spec({"student": {"type": "vit", "cell": "lstm"}})
    with pytest.raises(ValueError, match="'student' must be a mapping, got str"):
        student_spec({"student": "vit"})
    with pytest.raises(ValueError, match="student.distillation_token must be true or false, got 'yes'"):
        student_spec({"student": {"type": "vit", "distillation_token": "yes"}})
    with pytest.raises(ValueError, match="student.config must be a mapping of ViT config keys"):
        student_spec({"student": {"type": "vit", "config": [128]}})


def test_recipe_student_without_config_needs_a_vit_teacher():
    spec = student_spec({"student": {"type": "vit"}})
    with pytest.raises(ValueError, match="the teacher is a resnet model; give student.config"):
        spec.build(convnet())
    assert type(spec.build(vit(), [0, 1])).__name__ == "DeiTForImageClassificationWithTeacher"


def _tiny_fashion_mnist(n: int = 5100) -> DatasetDict:
    """Random images in Fashion-MNIST's shape (the runner holds 5,000 training images out for validation)."""
    rng = np.random.default_rng(0)
    features = Features({"image": Array2D(shape=(28, 28), dtype="uint8"), "label": ClassLabel(num_classes=10)})
    return DatasetDict({
        split: Dataset.from_dict({"image": rng.integers(0, 255, (n, 28, 28), dtype=np.uint8),
                                  "label": rng.integers(0, 10, n)}, features)
        for split in ("train", "test")
    })  # fmt: skip


def test_shipped_deit_recipe_runs(tmp_path, monkeypatch):
    """recipes/deit-fashion-mnist.yaml end to end (a convnet teacher trained first, the DeiT student, int8) on
    random images shaped like Fashion-MNIST, with its steps cut to two."""
    import hf_compress.runner.data as runner_data

    monkeypatch.setattr(runner_data, "load_fashion_mnist", lambda: _tiny_fashion_mnist())
    path = Path(__file__).resolve().parent.parent / "recipes" / "deit-fashion-mnist.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["data"].update(train_limit=32, eval_limit=8, test_limit=16)
    for stage in raw["stages"]:
        if "num_train_epochs" in stage:
            stage.pop("num_train_epochs")
            stage.update(max_steps=2, per_device_train_batch_size=8, use_cpu=True)
    assert run_cli(tmp_path, raw, out=tmp_path / "out") == 0
    deit = AutoModelForImageClassification.from_pretrained(next((tmp_path / "out").glob("*-deit")))
    assert type(deit).__name__ == "DeiTForImageClassificationWithTeacher"
    teacher = AutoModelForImageClassification.from_pretrained(next((tmp_path / "out").glob("*-train-teacher")))
    assert teacher.config.model_type == "resnet"
    card = (next((tmp_path / "out").glob("*-deit")) / "README.md").read_text()
    assert "resnet" in card.lower()
