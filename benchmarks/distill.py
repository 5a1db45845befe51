"""Distillation benchmark: real teachers, 3-layer students, KD vs no-KD vs ablations, and trainer overhead.

python -m benchmarks distill            # full run (text + vision), ~1 h on 2 CPU cores
python -m benchmarks distill --quick    # a few steps on small subsets, to check the plumbing
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

from . import common

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
COLUMNS = [
    ("model", "model"),
    ("accuracy", "test acc"),
    ("pct_teacher", "% of teacher"),
    ("params_m", "params (M)"),
    ("size_mb", "MB on disk"),
    ("lat_8x128", "latency 8x128 (ratio)"),
    ("lat_1x128", "latency 1x128 (ratio)"),
    ("train_s", "train wall s"),
]


def _distill(teacher, student, variant, data, collator, out, epochs, batch, lr, max_steps=-1):
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
    student.set_attn_implementation("sdpa")  # back to the default for timing and evaluation
    return time.perf_counter() - start, trainer.state.log_history


def _rows(teacher, students, test, collator, shapes):
    teacher.set_attn_implementation("sdpa")  # attention KD switched the teacher too: measure it as users run it
    teacher_acc = common.evaluate_accuracy(teacher, test, collator)
    latencies = common.latency_ratios(teacher, {name: s for name, (s, _) in students.items()}, shapes=shapes)
    key = {f"{b}x{length}" for b, length in shapes}
    rows = [
        dict(
            model="teacher",
            accuracy=teacher_acc,
            pct_teacher=100.0,
            params_m=common.count_params(teacher) / 1e6,
            size_mb=common.size_on_disk_mb(teacher),
            **{f"lat_{k}": 1.0 for k in key},
        )
    ]
    for name, (student, train_s) in students.items():
        acc = common.evaluate_accuracy(student, test, collator)
        rows.append(
            dict(
                model=name,
                accuracy=acc,
                pct_teacher=100 * acc / teacher_acc,
                params_m=common.count_params(student) / 1e6,
                size_mb=common.size_on_disk_mb(student),
                train_s=train_s,
                **{f"lat_{k}": latencies[name][k] for k in key},
            )
        )
    return rows


def run_text(quick: bool, epochs: float = 1.0, variants: list[str] | None = None) -> dict:
    teacher_path = common.text_teacher()
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    data = common.rt_data(tokenizer, train_limit=256 if quick else None)
    test = data["test"].select(range(128)) if quick else data["test"]
    collator = DataCollatorWithPadding(tokenizer)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path)
    students, logs = {}, {}
    for name, variant in TEXT_VARIANTS.items():
        if variants and name not in variants:
            continue
        torch.manual_seed(0)
        student = make_student(teacher, layers=[1, 3, 5])
        train_s, log = _distill(
            teacher,
            student,
            variant,
            data["train"],
            collator,
            tempfile.mkdtemp(),
            epochs=epochs,
            batch=32,
            lr=5e-5,
            max_steps=4 if quick else -1,
        )
        students[name], logs[name] = (student, train_s), log
        print(f"[text] {name}: trained in {train_s:.0f}s", flush=True)
    rows = _rows(teacher, students, test, collator, shapes=((8, 128), (1, 128)))
    overhead = trainer_overhead(teacher, data["train"], collator, reps=5 if quick else 20)
    return {"rows": rows, "overhead": overhead, "logs": logs}


def run_vision(quick: bool, epochs: float = 1.0) -> dict:
    teacher_path = common.vision_teacher(epochs=2.0, train_limit=20000)
    data = common.fmnist_data(train_limit=256 if quick else 20000, test_limit=256 if quick else None)
    teacher = AutoModelForImageClassification.from_pretrained(teacher_path)
    students = {}
    for name, variant in VISION_VARIANTS.items():
        torch.manual_seed(0)
        student = make_student(teacher, layers=[1, 3, 5])
        train_s, _ = _distill(
            teacher,
            student,
            variant,
            data["train"],
            None,
            tempfile.mkdtemp(),
            epochs=epochs,
            batch=128,
            lr=5e-4,
            max_steps=4 if quick else -1,
        )
        students[name] = (student, train_s)
        print(f"[vision] {name}: trained in {train_s:.0f}s", flush=True)
    rows = _rows(teacher, students, data["test"], None, shapes=((8, 128), (1, 128)))
    return {"rows": rows}


def trainer_overhead(teacher, dataset, collator, reps: int = 20) -> dict[str, float]:
    """One DistillationTrainer step vs one plain student Trainer step + one teacher forward (same batch).

    A step is forward + backward through `Trainer.training_step`; timings interleaved, medians compared.
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
        teacher.set_attn_implementation("sdpa")
    return results


def report(text: dict | None, vision: dict | None) -> str:
    parts = []
    if text:
        parts.append("### Text: MiniLM-L6 teacher (Rotten Tomatoes) -> 3-layer student (teacher layers 1, 3, 5)\n")
        parts.append(common.markdown_table(text["rows"], COLUMNS))
        overhead = ", ".join(f"{k}: {v:.3f}x" for k, v in text["overhead"].items())
        parts.append(f"\nTrainer overhead (distillation step / (student step + teacher forward)): {overhead}\n")
    if vision:
        parts.append("### Vision: ViT (6 layers, Fashion-MNIST) -> 3-layer student\n")
        parts.append(common.markdown_table(vision["rows"], COLUMNS))
    return "\n".join(parts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny subsets and a few steps (plumbing check)")
    parser.add_argument("--only", choices=["text", "vision"], help="run one half")
    parser.add_argument("--epochs", type=float, default=1.0, help="student training epochs (default 1)")
    parser.add_argument("--variants", nargs="+", help=f"text variants to run (default all): {list(TEXT_VARIANTS)}")
    parser.add_argument("--name", help="JSON file name under benchmarks/results/<date>/ (default from --only)")
    args = parser.parse_args(argv)
    common.setup()
    text = run_text(args.quick, args.epochs, args.variants) if args.only in (None, "text") else None
    vision = run_vision(args.quick, args.epochs) if args.only in (None, "vision") else None
    payload = {"suite": "distill", "argv": argv, "quick": args.quick, "text": text, "vision": vision}
    suffix = "-quick" if args.quick else ""
    name = args.name or (f"distill-{args.only}{suffix}" if args.only else f"distill{suffix}")
    path = common.write_json(name, payload)
    print(report(text, vision))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
