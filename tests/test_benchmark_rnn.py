"""The RNN benchmark's own plumbing on tiny models: real-length latency ratios, the transfer sets, the report."""

import torch
from conftest import VOCAB, bert_config, text_dataset
from transformers import BertForSequenceClassification, BertTokenizerFast, DataCollatorWithPadding

from benchmarks import common, rnn
from hf_compress import rnn_student_from_teacher


def tiny():
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config(num_labels=2)).eval()
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{i}" for i in range(VOCAB - 5)]]
    return teacher, BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)})


def test_transfer_sets_and_real_length_latency():
    teacher, tokenizer = tiny()
    train = text_dataset(6, num_labels=2, padded=False)
    sets, timing = rnn.transfer_sets(teacher, tokenizer, train, copies=2)
    assert len(sets["augmented"]) == 18 and len(sets["original"]) == 6 and timing["transfer_rows"] == 18
    assert sets["original"]["labels"] == train["labels"]
    assert sets["augmented_labelled"]["labels"] == [y for y in train["labels"] for _ in range(3)]
    student = rnn_student_from_teacher(teacher, hidden_size=4).eval()
    ratios = rnn.real_length_ratios(teacher, {"s": student}, train, DataCollatorWithPadding(tokenizer), 4, 6)
    assert ratios["s"] > 0 and ratios["__teacher_ms__"] > 0


def test_report_has_every_row_and_the_training_times():
    rows = [{"model": "teacher", "accuracy": 0.8}, {"model": rnn.INT8, "accuracy": 0.75, "lat_real_32x": 0.05}]
    training = {"train_rows": 10, "transfer_rows": 30, "augment_s": 1.0, "label_s": 2.0, "s_per_step_cached": 0.1,
                "s_per_step_live": 0.5, "live_over_cached": 5.0, "kd_aug_train_s_cached": 3.0,
                "kd_aug_train_s_cached_incl_labelling": 5.0, "kd_aug_train_s_live_projected": 15.0}  # fmt: skip
    text = rnn.report({"teacher": "t", "rows": rows, "training": training, "copies": 2})
    assert rnn.INT8 in text and "0.050" in text and "(5.0x)" in text and "30 rows" in text
    assert "latency real lengths 32/batch" in text.splitlines()[2] and common.columns()[0][1] == "model"


def test_ort_rows_face_the_faster_teacher_runtime():
    import pytest

    pytest.importorskip("onnxruntime")
    from hf_compress import quantize

    teacher, tokenizer = tiny()
    test = text_dataset(8, num_labels=2, padded=False)
    student = rnn_student_from_teacher(teacher, hidden_size=4).eval()
    collator = DataCollatorWithPadding(tokenizer)
    rows = {r["model"]: r for r in rnn.ort_rows(teacher, student, quantize(student), tokenizer, test, collator, True)}
    assert set(rows) == {rnn.ORT_TEACHER, *rnn.ORT}
    for name in rnn.ORT:
        row, ort_teacher = rows[name], rows[rnn.ORT_TEACHER]
        assert row["export_fidelity"] >= 0.99 and 0 <= row["accuracy"] <= 1
        for shape in rnn.SHAPES:  # the ratio to the faster teacher is never smaller than the one to torch's
            expected = row[f"lat_{shape}"] / min(1.0, ort_teacher[f"lat_{shape}"])
            assert row[f"fastest_teacher_{shape}"] == expected >= row[f"lat_{shape}"]
    text = rnn.report({"teacher": "t", "rows": list(rows.values()), "copies": 2, "training": {
        "train_rows": 8, "transfer_rows": 8, "augment_s": 0, "label_s": 0, "s_per_step_cached": 1,
        "s_per_step_live": 1, "live_over_cached": 1, "kd_aug_train_s_cached": 1,
        "kd_aug_train_s_cached_incl_labelling": 1, "kd_aug_train_s_live_projected": 1}})  # fmt: skip
    assert "faster of the two teacher runtimes" in text
