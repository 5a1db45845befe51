"""Shared benchmark plumbing: the real teachers, data, and the size / latency / accuracy measurements.

Latency is always a ratio to the teacher measured interleaved in one process (teacher, model, teacher,
model, ...) with a fixed number of threads, which is robust on a noisy shared machine.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    ViTConfig,
)

from hf_compress import evaluation
from hf_compress.data import demo_model_path, load_fashion_mnist, load_rotten_tomatoes

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / "cache"
RESULTS = ROOT / "results"
THREADS = 2
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")  # results/<day>/<suite>.json
MAX_LENGTH = 64


def day_folders(root: Path | None = None, until: str | None = None) -> list[Path]:
    """The folders under ``root`` (default RESULTS) named by a day (YYYY-MM-DD), oldest first; with ``until``
    (a day), none after it. Other folders (an archive, a scratch copy) are not results."""
    root = RESULTS if root is None else root
    if not root.is_dir():
        return []
    days = (p for p in root.iterdir() if p.is_dir() and DAY.fullmatch(p.name))
    return sorted(p for p in days if until is None or p.name <= until)


def setup(threads: int = THREADS, seed: int = 0) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)


# ---- data -------------------------------------------------------------------------------------------------


def rt_data(tokenizer, max_length: int = MAX_LENGTH, train_limit: int | None = None):
    """Tokenized Rotten Tomatoes splits (train / validation / test), fixed seed-0 split."""
    data = load_rotten_tomatoes(seed=0)
    if train_limit:
        data["train"] = data["train"].select(range(min(train_limit, len(data["train"]))))
    return data.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=max_length), batched=True, remove_columns=["text"]
    ).rename_column("label", "labels")


def fmnist_data(train_limit: int | None = None, test_limit: int | None = None):
    """Fashion-MNIST as normalised 1 x 28 x 28 ``pixel_values`` tensors."""
    data = load_fashion_mnist()
    if train_limit:
        data["train"] = data["train"].select(range(train_limit))
    if test_limit:
        data["test"] = data["test"].select(range(test_limit))

    def to_pixels(batch):
        images = np.asarray(batch["image"], dtype=np.float32) / 255.0
        return {"pixel_values": ((images - 0.5) / 0.5)[:, None], "labels": batch["label"]}

    data = data.map(to_pixels, batched=True, remove_columns=["image", "label"])
    return data.with_format("torch")


def train_kwargs(output_dir: str, **overrides) -> dict:
    """The training arguments every benchmark run shares (CPU, seed 0, no checkpoints, no reporting)."""
    return {
        "output_dir": output_dir, "per_device_train_batch_size": 32, "weight_decay": 0.01, "logging_steps": 50,
        "save_strategy": "no", "report_to": [], "seed": 0, "use_cpu": True, "dataloader_pin_memory": False,
        **overrides,
    }  # fmt: skip


# ---- teachers (cached: every suite uses the same ones) ---------------------------------------------------


def text_teacher(epochs: float = 2.0) -> str:
    """MiniLM-L6 fine-tuned on Rotten Tomatoes; trained once, then loaded from benchmarks/cache."""
    out = CACHE / "teacher-minilm-rt"
    if (out / "config.json").is_file():
        return str(out)
    source = demo_model_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=2, id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1}
    )
    data = rt_data(tokenizer)
    args = TrainingArguments(
        **train_kwargs(str(CACHE / "work-teacher-rt"), num_train_epochs=epochs, learning_rate=5e-5, warmup_steps=30),
        train_sampling_strategy="group_by_length",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(out))
    shutil.rmtree(CACHE / "work-teacher-rt", ignore_errors=True)
    return str(out)


def vision_teacher(epochs: float = 3.0, train_limit: int | None = None) -> str:
    """A small ViT (6 layers, hidden 128) trained from scratch on Fashion-MNIST; cached."""
    out = CACHE / "teacher-vit-fmnist"
    if (out / "config.json").is_file():
        return str(out)
    config = ViTConfig(
        image_size=28,
        patch_size=4,
        num_channels=1,
        hidden_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=512,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=10,
    )
    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_config(config)
    data = fmnist_data(train_limit=train_limit)
    args = TrainingArguments(
        **train_kwargs(
            str(CACHE / "work-teacher-vit"),
            num_train_epochs=epochs,
            per_device_train_batch_size=128,
            learning_rate=1e-3,
            warmup_steps=100,
            weight_decay=0.05,
            logging_steps=100,
        )
    )
    Trainer(model=model, args=args, train_dataset=data["train"]).train()
    model.save_pretrained(str(out))
    shutil.rmtree(CACHE / "work-teacher-vit", ignore_errors=True)
    return str(out)


# ---- measurements (the same code the CLI and model cards use) --------------------------------------------

count_params = evaluation.count_params
example_inputs = evaluation.example_inputs
size_on_disk_mb = evaluation.weights_size_mb


def evaluate_accuracy(model, dataset, collator=None) -> float:
    return evaluation.task_metric(model, dataset, "accuracy", collator)


def latency_ratios(reference, models, shapes=((8, 128), (1, 128)), reps: int = 15, warmup: int = 3):
    return evaluation.latency_ratios(reference, models, shapes=shapes, reps=reps, warmup=warmup)


def size_or_nan(model) -> float:
    """MB that save_pretrained writes, or NaN for models that cannot be saved (some peers)."""
    try:
        return size_on_disk_mb(model)
    except Exception:
        return float("nan")


def auto_class(model):
    """The Auto class that loads ``model``'s checkpoint (image or sequence classification)."""
    vision = getattr(model.config, "image_size", None)
    return AutoModelForImageClassification if vision else AutoModelForSequenceClassification


def reload_check(model) -> str:
    """Does the model survive save_pretrained -> from_pretrained (hf_compress imported) with equal outputs?"""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            model.save_pretrained(tmp)
        except Exception as err:  # peers that cannot be saved
            return f"no: save fails ({type(err).__name__})"
        try:
            reloaded = auto_class(model).from_pretrained(tmp)
        except Exception as err:
            reason = "size mismatch" if "size" in str(err) else type(err).__name__
            return f"no: load fails ({reason})"
        inputs = example_inputs(model, 2, 16)
        with torch.inference_mode():
            same = torch.equal(reloaded(**inputs).logits, model(**inputs).logits)
        return "yes, identical" if same else "loads, but outputs differ"


def measure(teacher, entries: dict[str, dict], test, collator=None, reps: int = 20, teacher_name: str = "teacher"):
    """One row per model, the teacher first, with the columns every suite shares.

    ``entries``: ``{name: {"model": model, "compress_s": seconds, **extra columns}}``. Columns: test accuracy,
    % of the teacher, params (M), MB on disk, latency at 8x128 and 1x128 as a ratio to the teacher (measured
    interleaved in this process), peak inference memory at 8x128 in a fresh process, compression wall time.
    """
    from .memory import peak_inference_mb

    models = {name: entry["model"].eval() for name, entry in entries.items()}
    latency = latency_ratios(teacher, models, reps=reps)
    memory_inputs = example_inputs(teacher, 8, 128)
    everyone = {teacher_name: {"model": teacher.eval()}, **entries}
    rows, teacher_acc = [], None
    for name, entry in everyone.items():
        model = entry["model"]
        acc = evaluate_accuracy(model, test, collator)
        teacher_acc = acc if teacher_acc is None else teacher_acc
        lat = latency.get(name, {"8x128": 1.0, "1x128": 1.0})
        memory = peak_inference_mb(model, memory_inputs, threads=THREADS)
        extra = {k: v for k, v in entry.items() if k != "model"}
        rows.append(
            dict(
                model=name,
                accuracy=acc,
                pct_teacher=100 * acc / teacher_acc,
                params_m=count_params(model) / 1e6,
                size_mb=size_or_nan(model),
                lat_8x128=lat["8x128"],
                lat_1x128=lat["1x128"],
                speedup_8x128=1 / lat["8x128"],
                peak_mb=memory["peak_mb"],
                **extra,
            )  # fmt: skip
        )
        print(f"[measure] {name}: acc {acc:.4f} latency {lat['8x128']:.3f} {memory}", flush=True)
    rows[0]["teacher_ms"] = latency["__reference__"]
    return rows


def columns(vision: bool = False, extra: list[tuple[str, str]] = (), after: str = "model") -> list[tuple[str, str]]:
    """The shared table columns (``extra`` inserted after the ``after`` column); ViT latency is per image batch."""
    big, one = ("8 images", "1 image") if vision else ("8x128", "1x128")
    shared = [
        ("model", "model"),
        ("accuracy", "test acc"),
        ("pct_teacher", "% of teacher"),
        ("params_m", "params (M)"),
        ("size_mb", "MB on disk"),
        ("lat_8x128", f"latency {big} (ratio)"),
        ("lat_1x128", f"latency {one} (ratio)"),
        ("peak_mb", f"peak MB ({big})"),
        ("compress_s", "compress wall s"),
    ]
    at = [k for k, _ in shared].index(after) + 1
    return shared[:at] + list(extra) + shared[at:]


# ---- reporting ----------------------------------------------------------------------------------------------


def result_path(suite: str) -> Path:
    """Where today's result of ``suite`` is written."""
    return RESULTS / datetime.date.today().isoformat() / f"{suite}.json"


def write_json(suite: str, payload: dict) -> Path:
    path = result_path(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    return path


def legacy_rows(rows: list[dict]) -> list[dict]:
    """Rows written before the shared columns called the compression time ``train_s`` or ``quantize_s``."""
    renamed = []
    for row in rows:
        old = next((row[k] for k in ("train_s", "quantize_s") if k in row), None)
        renamed.append(row if old is None else {"compress_s": old, **row})
    return renamed


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """``columns`` = [(key, header)]; floats get 3 significant decimals."""

    def fmt(value) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return str(value).replace("|", "\\|")  # a "|" in a label would end its cell

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(k, "")) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)
