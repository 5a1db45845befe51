"""The RNN student: the hand-written reference equals torch's kernels, padding never matters, it saves, reloads,
runs in a pipeline, is built from a teacher and quantizes like the transformer students."""

import subprocess
import sys

import pytest
import torch
from conftest import VOCAB, bert_config
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForSequenceClassification, pipeline

from hf_compress import (
    QuantizationConfig,
    RNNStudentConfig,
    RNNStudentForSequenceClassification,
    quantize,
    rnn_student_from_teacher,
)
from hf_compress.data import demo_model_path
from hf_compress.models.rnn import modeling
from hf_compress.models.rnn.reference import reference_forward

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def student(**overrides) -> RNNStudentForSequenceClassification:
    values = dict(vocab_size=VOCAB, embedding_size=8, hidden_size=6, num_layers=2, num_labels=3, dropout=0.0)
    values.update(overrides)
    torch.manual_seed(0)
    return RNNStudentForSequenceClassification(RNNStudentConfig(**values)).eval()


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_reference_equals_torch_kernels(cell, bidirectional, batch_first):
    torch.manual_seed(0)
    module = CELLS[cell](5, 4, num_layers=3, bidirectional=bidirectional, batch_first=batch_first).double().eval()
    dirs = 2 if bidirectional else 1
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    x = x if batch_first else x.transpose(0, 1)
    h0 = torch.randn(3 * dirs, 2, 4, dtype=torch.float64)
    initial = (h0, torch.randn_like(h0)) if cell == "lstm" else h0
    for state in (None, initial):
        expected_out, expected_final = module(x, state)
        out, final = reference_forward(module, x, state)
        torch.testing.assert_close(out, expected_out, atol=1e-6, rtol=0)
        for got, want in zip(
            final if cell == "lstm" else (final,), expected_final if cell == "lstm" else (expected_final,)
        ):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_reference_differs_when_the_weights_differ():
    torch.manual_seed(0)
    module = nn.LSTM(5, 4, batch_first=True).double()
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    out, _ = reference_forward(module, x)
    with torch.no_grad():
        module.weight_hh_l0.add_(0.1)
    assert not torch.allclose(out, module(x)[0], atol=1e-6)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
def test_padding_never_changes_the_logits(cell, pooling):
    model = student(cell=cell, pooling=pooling)
    row = torch.randint(1, VOCAB, (1, 5))
    alone = model(row).logits
    right = model(torch.cat([row, torch.zeros(1, 3, dtype=torch.long)], 1), torch.tensor([[1] * 5 + [0] * 3])).logits
    left = model(torch.cat([torch.zeros(1, 3, dtype=torch.long), row], 1), torch.tensor([[0] * 3 + [1] * 5])).logits
    batch = torch.randint(1, VOCAB, (3, 8))
    batch[1] = torch.cat([row[0], torch.zeros(3, dtype=torch.long)])
    mask = torch.ones_like(batch)
    mask[1, 5:] = 0
    in_batch = model(batch, mask).logits[1:2]
    for other in (right, left, in_batch):
        torch.testing.assert_close(other, alone, atol=1e-6, rtol=0)
    assert not torch.allclose(model(batch[1:2]).logits, alone, atol=1e-4)  # the mask is what makes them equal


def test_losses_for_classification_regression_and_unlabelled_batches():
    model = student()
    ids = torch.randint(1, VOCAB, (4, 6))
    out = model(ids, labels=torch.tensor([0, 1, 2, -100]))
    expected = nn.functional.cross_entropy(out.logits[:3], torch.tensor([0, 1, 2]))
    torch.testing.assert_close(out.loss, expected)
    unlabelled = model(ids, labels=torch.full((4,), -100))
    assert unlabelled.loss.item() == 0.0 and unlabelled.loss.requires_grad
    regression = student(num_labels=1)
    out = regression(ids, labels=torch.rand(4))
    assert regression.config.problem_type == "regression" and out.loss.item() > 0


def test_save_reload_identical_through_the_auto_class(tmp_path):
    model = student(cell="gru", pooling="mean", classifier_hidden_size=5)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(reloaded) is RNNStudentForSequenceClassification and reloaded.config.cell == "gru"
    ids = torch.randint(1, VOCAB, (3, 9))
    assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_pipeline_with_the_teachers_tokenizer(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    model = student(vocab_size=tokenizer.vocab_size, num_labels=2, id2label={0: "rotten", 1: "fresh"})
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    classify = pipeline("text-classification", model=str(tmp_path))
    texts = ["a gorgeous, witty film", "dull and far too long"]
    results = classify(texts)
    expected = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1).max(-1)
    assert [r["label"] for r in results] == [model.config.id2label[i] for i in expected.indices.tolist()]
    assert [r["score"] for r in results] == pytest.approx(expected.values.tolist(), abs=1e-5)
    pair = classify({"text": "a gorgeous film", "text_pair": "it is dull"})  # text pairs: one sequence
    assert pair["label"] in ("rotten", "fresh")


def test_without_the_plugin_the_load_fails_loudly(tmp_path):
    student().save_pretrained(tmp_path)
    code = (
        "import sys\nfrom transformers import AutoModelForSequenceClassification\n"
        f"try:\n    AutoModelForSequenceClassification.from_pretrained({str(tmp_path)!r})\n"
        "except Exception as err:\n    print(type(err).__name__, err)\n    sys.exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "hf_compress_rnn" in result.stdout


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(cell="transformer"), r"cell='transformer' is not supported; choose one of \['rnn', 'lstm', 'gru'\]"),
        (dict(pooling="cls"), r"pooling='cls' is not supported"),
        (dict(hidden_size=0), r"hidden_size must be an int >= 1"),
        (dict(num_layers=1.5), r"num_layers must be an int >= 1"),
        (dict(dropout=1.0), r"dropout must be a number in \[0, 1\)"),
        (dict(classifier_hidden_size=-1), r"classifier_hidden_size must be an int >= 0"),
        (dict(pad_token_id=VOCAB), r"pad_token_id must be a token id in 0\.\.63"),
        (dict(bidirectional="yes"), r"bidirectional must be true or false"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        RNNStudentConfig(**{"vocab_size": VOCAB, **overrides})


def test_student_from_teacher_copies_vocab_labels_and_embeddings():
    torch.manual_seed(0)
    id2label = {0: "a", 1: "b", 2: "c"}
    teacher = BertForSequenceClassification(
        bert_config(id2label=id2label, label2id={v: k for k, v in id2label.items()})
    )
    model = rnn_student_from_teacher(teacher, cell="gru", hidden_size=7)
    table = teacher.get_input_embeddings().weight
    assert model.config.vocab_size == VOCAB and model.config.id2label == id2label and model.config.cell == "gru"
    assert torch.equal(model.embeddings.weight, table)
    projected = rnn_student_from_teacher(teacher, embedding_size=4, freeze_embeddings=True)
    assert projected.embeddings.weight.shape == (VOCAB, 4) and not projected.embeddings.weight.requires_grad
    # PCA keeps the geometry best: the projection's Gram matrix is the centred table's best rank-4 approximation.
    centred = (table - table.mean(0)).double()
    gram = projected.embeddings.weight.double() @ projected.embeddings.weight.double().T
    values, vectors = torch.linalg.eigh(centred @ centred.T)
    best = (vectors[:, -4:] * values[-4:]) @ vectors[:, -4:].T
    torch.testing.assert_close(gram, best, atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="wider than the teacher's embeddings"):
        rnn_student_from_teacher(teacher, embedding_size=64)


@pytest.mark.parametrize("method", ["int8_dynamic", "int8_weight_only"])
def test_quantize_round_trip(tmp_path, method):
    model = student(classifier_hidden_size=8)
    ids = torch.randint(1, VOCAB, (3, 9))
    reference = model(ids).logits
    quantize(model, QuantizationConfig(method=method))
    assert type(model.embeddings).__name__ == "Int8Embedding"
    quantized = model(ids).logits
    torch.testing.assert_close(quantized, reference, atol=0.05, rtol=0.05)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(reloaded.classifier).__name__ == type(model.classifier).__name__
    assert torch.equal(reloaded(ids).logits, quantized)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_export_path_equals_the_packed_run(monkeypatch, cell, pooling, bidirectional):
    """Under torch.onnx.export the model runs unpacked (the exporter cannot trace packing): same logits and
    per-token states on left / right padding, holes and an all-padding row."""
    model = student(cell=cell, pooling=pooling, bidirectional=bidirectional)
    ids = torch.randint(1, VOCAB, (5, 9))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    mask[2, 6:] = 0  # right padding
    mask[3, 2:4] = 0  # a hole
    mask[4] = 0  # nothing but padding
    with torch.no_grad():
        packed = model(ids, mask, output_hidden_states=True)
        monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
        monkeypatch.setattr(modeling, "pack_padded_sequence", None)  # the export path must not pack
        unpacked = model(ids, mask, output_hidden_states=True)
    torch.testing.assert_close(unpacked.logits, packed.logits, atol=1e-6, rtol=0)
    _, real, _ = model.encode(ids, mask)
    states = [out.hidden_states[0].masked_fill(~real[..., None], 0) for out in (packed, unpacked)]
    torch.testing.assert_close(states[1], states[0], atol=1e-6, rtol=0)
