"""A tiny BERT teacher with a tokenizer and small CSV splits on disk, and a recipe over them: shared by the
hardening, fuzz, kill -9, CLI end-to-end and RNN-recipe tests (the runner reads local folders and files, as a
user's recipe does)."""

from __future__ import annotations

import copy
import csv
import re
from pathlib import Path

import torch
import yaml
from conftest import VOCAB, bert_config
from transformers import BertForSequenceClassification, BertTokenizerFast

from hf_compress.cli import main as cli_main

WORDS = [f"w{i}" for i in range(VOCAB - 5)]


def make_assets(root: Path, n_train: int = 48, n_eval: int = 16) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)})
    torch.manual_seed(0)
    BertForSequenceClassification(bert_config(num_labels=2)).save_pretrained(root / "teacher")
    tokenizer.save_pretrained(root / "teacher")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("validation", n_eval), ("test", n_eval)):
        rows = []
        for _ in range(n):
            ids = torch.randint(0, len(WORDS), (6,), generator=g).tolist()
            rows.append([" ".join(WORDS[i] for i in ids), int(ids[0] % 2)])
        write_csv(root / f"{split}.csv", rows)
    return root


def write_csv(path: Path, rows: list, header=("text", "label")) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def tiny_recipe(assets: Path, *stages: dict, **data) -> dict:
    """A recipe over the tiny assets; ``stages`` default to one int8 quantize stage (no training: fast)."""
    return {
        "name": "tiny",
        "teacher": {"source": str(assets / "teacher")},
        "data": {"source": "files", "max_length": 16,
                 "files": {s: str(assets / f"{s}.csv") for s in ("train", "validation", "test")}, **data},
        "stages": copy.deepcopy(list(stages)) or [{"name": "int8", "method": "quantize"}],
    }  # fmt: skip


FINETUNE = {
    "name": "finetune",
    "method": "finetune",
    "max_steps": 2,
    "per_device_train_batch_size": 8,
    "use_cpu": True,
}
DISTILL = {"name": "distill", "method": "distill", "student_layers": [0, 2], "max_steps": 2, "use_cpu": True,
           "per_device_train_batch_size": 8}  # fmt: skip


def run_cli(tmp_path, raw, *extra, out=None):
    """`hf-compress run` of the recipe ``raw`` (written to tmp_path/recipe.yaml); returns the exit code."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return cli_main(["run", str(path), "--output-dir", str(out or tmp_path / "out"), *extra])


def expect_cli_error(capsys, code, message):
    """Exit code 2 and exactly one `hf-compress: error:` line matching ``message``, no traceback."""
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("hf-compress: error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), captured.err  # one line (progress bars aside)
