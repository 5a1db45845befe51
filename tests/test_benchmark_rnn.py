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
