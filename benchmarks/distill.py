"""Distillation benchmark: real teachers, 3-layer students, KD vs no-KD vs ablations vs TextBrewer (the same
student, losses, optimizer and steps), and the trainer's overhead.

python -m benchmarks distill                 # full run (text + vision), ~1 h on 2 CPU cores
python -m benchmarks distill --only vision   # the Fashion-MNIST ViT half, ~10 min
python -m benchmarks distill --quick         # a few steps on small subsets, to check the plumbing
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import (
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from hf_compress import DistillationConfig, DistillationTrainer, make_student
from hf_compress.distill.matching import parse_layer_map, resolve_layer_map

from . import common, peers

TEXT_VARIANTS = {
    "KD: pred + hidden + attention": dict(kd_weight=1.0, hidden_weight=1.0, attention_weight=1.0),
    "KD w/o prediction": dict(kd_weight=0.0, hidden_weight=1.0, attention_weight=1.0),
    "KD w/o hidden": dict(kd_weight=1.0, hidden_weight=0.0, attention_weight=1.0),
    "KD w/o attention": dict(kd_weight=1.0, hidden_weight=1.0, attention_weight=0.0),
    "no KD (labels only)": dict(kd_weight=0.0, hard_label_weight=1.0),
}
VISION_VARIANTS = {
    "KD: pred + hidden + attention": dict(kd_weight=1.0, hidden_weight=1.0, attention_weight=1.0),
    "KD: DeiT hard + labels": dict(kd_loss_type="hard", kd_weight=0.5, hard_label_weight=0.5),
    "no KD (labels only)": dict(kd_weight=0.0, hard_label_weight=1.0),
}
PEER = "TextBrewer, same losses and steps (peer)"
PEER_LOSSES = TEXT_VARIANTS["KD: pred + hidden + attention"]


def _distill(teacher, student, variant, data, collator, out, epochs, batch, lr, max_steps=-1) -> float:
    args = DistillationConfig(
        **common.train_kwargs(
            out,
            num_train_epochs=epochs,
            max_steps=max_steps,
            per_device_train_batch_size=batch,
            learning_rate=lr,
            warmup_steps=20,
            temperature=2.0,
        ),
        **variant,
    )
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data, data_collator=collator
    )
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def _textbrewer(teacher, data, collator, epochs, batch, lr, max_steps) -> dict:
    """The TextBrewer row: the same student init, losses, optimizer, schedule and steps as ours."""
    torch.manual_seed(0)
    student = make_student(teacher, layers=[1, 3, 5])
    pairs = resolve_layer_map(parse_layer_map("uniform"), 3, teacher.config.num_hidden_layers)
    seconds = peers.textbrewer_distill(
        teacher, student, data, collator, layer_pairs=pairs, temperature=2.0, epochs=epochs, max_steps=max_steps,
        batch_size=batch, learning_rate=lr, warmup_steps=20, **PEER_LOSSES,
    )  # fmt: skip
    print(f"[distill] {PEER}: trained in {seconds:.0f}s", flush=True)
    return {"model": student, "compress_s": seconds}


def _run(teacher, variants, data, collator, test, *, epochs, batch, lr, quick, label, with_peer) -> list[dict]:
    entries = {}
    for name, variant in variants.items():
        torch.manual_seed(0)
        student = make_student(teacher, layers=[1, 3, 5])
        seconds = _distill(teacher, student, variant, data, collator, tempfile.mkdtemp(), epochs=epochs,
                           batch=batch, lr=lr, max_steps=4 if quick else -1)  # fmt: skip
        entries[name] = {"model": student, "compress_s": seconds}
        print(f"[{label}] {name}: trained in {seconds:.0f}s", flush=True)
    try:
        if with_peer:
            entries[PEER] = _textbrewer(teacher, data, collator, epochs, batch, lr, 4 if quick else -1)
    except ImportError as err:
        print(f"[{label}] skipping {PEER}: {err}", flush=True)
    return common.measure(teacher, entries, test, collator, reps=5 if quick else 20)


def run_text(quick: bool, epochs: float = 1.0, variants: list[str] | None = None, with_peer: bool = True) -> dict:
    teacher_path = common.text_teacher()
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    data = common.rt_data(tokenizer, train_limit=256 if quick else None)
    test = data["test"].select(range(128)) if quick else data["test"]
    collator = DataCollatorWithPadding(tokenizer)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path)
    chosen = {k: v for k, v in TEXT_VARIANTS.items() if not variants or k in variants}
    rows = _run(teacher, chosen, data["train"], collator, test, epochs=epochs, batch=32, lr=5e-5, quick=quick,
                label="text", with_peer=with_peer)  # fmt: skip
    overhead = trainer_overhead(teacher, data["train"], collator, reps=5 if quick else 20)
    return {"rows": rows, "overhead": overhead}


def run_vision(quick: bool, epochs: float = 1.0, with_peer: bool = True) -> dict:
    teacher_path = common.vision_teacher(epochs=2.0, train_limit=20000)
    data = common.fmnist_data(train_limit=256 if quick else 20000, test_limit=256 if quick else None)
    teacher = AutoModelForImageClassification.from_pretrained(teacher_path)
    rows = _run(teacher, VISION_VARIANTS, data["train"], None, data["test"], epochs=epochs, batch=128, lr=5e-4,
                quick=quick, label="vision", with_peer=with_peer)  # fmt: skip
    return {"rows": rows}


def trainer_overhead(teacher, dataset, collator, reps: int = 20) -> dict[str, float]:
    """One DistillationTrainer step vs one plain student Trainer step + one teacher forward (same batch).

    A step is forward + backward through `Trainer.training_step`; timings interleaved, medians compared. The
    baseline runs transformers' default (sdpa) attention; with attention KD ours must run eager-math attention
    to get the maps, and that cost is counted as overhead.
    """
    batch = collator([dataset[i] for i in range(32)])
    results = {}
    for label, variant in {
        "pred + hidden": dict(kd_weight=1.0, hidden_weight=1.0),
        "pred + hidden + attention": dict(kd_weight=1.0, hidden_weight=1.0, attention_weight=1.0),
    }.items():
        student = make_student(teacher, layers=[1, 3, 5])
        plain_student = make_student(teacher, layers=[1, 3, 5])
        out = tempfile.mkdtemp()
        kd = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=DistillationConfig(output_dir=out, report_to=[], use_cpu=True, **variant),
        )
        plain = Trainer(model=plain_student, args=TrainingArguments(output_dir=out, report_to=[], use_cpu=True))
        kd.current_gradient_accumulation_steps = plain.current_gradient_accumulation_steps = 1  # set by train()
        kd_inputs = kd._prepare_inputs(dict(batch))
        teacher_inputs = {k: v for k, v in kd_inputs.items() if k != "labels"}
        kd_times, plain_times = [], []
        for i in range(reps + 2):
            with kd.attention_maps():  # attention KD needs eager-math attention; the baseline keeps the default
                start = time.perf_counter()
                kd.training_step(student, dict(kd_inputs))
                kd_time = time.perf_counter() - start
            start = time.perf_counter()
            plain.training_step(plain_student, dict(kd_inputs))
            with torch.no_grad():
                teacher(**teacher_inputs)
            plain_time = time.perf_counter() - start
            if i >= 2:
                kd_times.append(kd_time)
                plain_times.append(plain_time)
            student.zero_grad()
            plain_student.zero_grad()
        results[label] = statistics.median(kd_times) / statistics.median(plain_times)
    return results


def report(text: dict | None, vision: dict | None) -> str:
    parts = []
    if text:
        parts.append("### Text: MiniLM-L6 teacher (Rotten Tomatoes) -> 3-layer student (teacher layers 1, 3, 5)\n")
        parts.append(common.markdown_table(common.legacy_rows(text["rows"]), common.columns()))
        overhead = ", ".join(f"{k}: {v:.3f}x" for k, v in text["overhead"].items())
        parts.append(f"\nTrainer overhead (distillation step / (student step + teacher forward)): {overhead}\n")
    if vision:
        parts.append("### Vision: ViT (6 layers, Fashion-MNIST) -> 3-layer student\n")
        parts.append(common.markdown_table(common.legacy_rows(vision["rows"]), common.columns(vision=True)))
    return "\n".join(parts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny subsets and a few steps (plumbing check)")
    parser.add_argument("--only", choices=["text", "vision"], help="run one half")
    parser.add_argument("--epochs", type=float, default=1.0, help="student training epochs (default 1)")
    parser.add_argument("--variants", nargs="+", help=f"text variants to run (default all): {list(TEXT_VARIANTS)}")
    parser.add_argument("--no-peer", action="store_true", help="leave out the TextBrewer row")
    parser.add_argument("--name", help="JSON file name under benchmarks/results/<date>/ (default from --only)")
    args = parser.parse_args(argv)
    common.setup()
    peer = not args.no_peer
    text = run_text(args.quick, args.epochs, args.variants, peer) if args.only in (None, "text") else None
    vision = run_vision(args.quick, args.epochs, peer) if args.only in (None, "vision") else None
    payload = {"suite": "distill", "argv": argv, "quick": args.quick, "text": text, "vision": vision}
    suffix = "-quick" if args.quick else ""
    name = args.name or (f"distill-{args.only}{suffix}" if args.only else f"distill{suffix}")
    path = common.write_json(name, payload)
    print(report(text, vision))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
