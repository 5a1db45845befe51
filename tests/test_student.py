import pytest
import torch
from conftest import bert_config, vit_config
from transformers import (
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    BertModel,
    ViTForImageClassification,
)

from hf_compress import make_student


def test_student_copies_chosen_layers_embeddings_and_head():
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config())
    student = make_student(teacher, layers=[0, 2])
    assert type(student) is BertForSequenceClassification
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for s_idx, t_idx in [(0, 0), (1, 2)]:
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(s_sd[key.format(s_idx)], t_sd[key.format(t_idx)])
    for key in ["bert.embeddings.word_embeddings.weight", "classifier.weight", "bert.pooler.dense.weight"]:
        assert torch.equal(s_sd[key], t_sd[key])


def test_student_with_all_layers_computes_the_teacher_function():
    torch.manual_seed(0)
    teacher = ViTForImageClassification(vit_config()).eval()
    student = make_student(teacher, layers=[0, 1, 2, 3]).eval()
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(student(pixel_values=x).logits, teacher(pixel_values=x).logits)


def test_student_saves_and_reloads_with_plain_transformers(tmp_path):
    torch.manual_seed(0)
    teacher = ViTForImageClassification(vit_config())
    student = make_student(teacher, layers=[1, 3]).eval()
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(reloaded(pixel_values=x).logits, student(pixel_values=x).logits)
    assert reloaded.config.num_hidden_layers == 2


def test_student_from_bare_encoder(tmp_path):
    teacher = BertModel(bert_config())
    student = make_student(teacher, layers=[3])
    assert student.config.num_hidden_layers == 1
    student.save_pretrained(tmp_path)
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path).config.num_hidden_layers == 1


@pytest.mark.parametrize(
    "layers, error, message",
    [
        ([], ValueError, "at least one layer"),
        ([0, 4], ValueError, r"out of range: the teacher has layers 0..3"),
        ([2, 1], ValueError, "strictly increasing"),
        ([1, 1], ValueError, "strictly increasing"),
        (["0"], TypeError, "must be ints"),
    ],
)
def test_make_student_rejects_bad_layers(layers, error, message):
    with pytest.raises(error, match=message):
        make_student(BertForSequenceClassification(bert_config()), layers=layers)
