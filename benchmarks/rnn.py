"""RNN-student benchmark (Tang et al. 2019): the MiniLM-L6 teacher of `benchmarks.distill` (same test split)
distilled into a one-layer BiLSTM, with the ablations KD with / without augmentation and labels only with /
without augmentation, plus the int8 BiLSTM; latency at 1x128, 8x128 and at the data's real lengths (dynamic
padding); training wall time with cached teacher logits vs a live teacher forward at every step.

python -m benchmarks rnn            # full run, ~15 min on 2 CPU cores once the teacher is cached
python -m benchmarks rnn --quick    # small subsets and a few steps, to check the plumbing
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
)

from hf_compress import DistillationConfig, DistillationTrainer, quantize, rnn_student_from_teacher
from hf_compress.data import AugmentationConfig, augment_dataset, demo_model_path, label_with_teacher

from . import common

# Tang et al.'s BiLSTM: 150 units per direction, max pooling, a 200-unit ReLU layer; 300-wide embeddings (here the
# teacher's table, PCA-projected from 384).
STUDENT = dict(cell="lstm", hidden_size=150, embedding_size=300, classifier_hidden_size=200, pooling="max")
KD = dict(kd_loss_type="mse", kd_weight=1.0, hard_label_weight=0.5)
VARIANTS = {  # name -> (transfer set, loss settings)
    "BiLSTM: KD + augmentation": ("augmented", KD),
    "BiLSTM: KD, no augmentation": ("original", KD),
    "BiLSTM: augmentation, labels only (no KD)": ("augmented_labelled", dict(kd_weight=0.0, hard_label_weight=1.0)),
    "BiLSTM: labels only": ("original", dict(kd_weight=0.0, hard_label_weight=1.0)),
}
INT8 = "BiLSTM: KD + augmentation, int8"
ORT = {"BiLSTM: KD + augmentation, ONNX Runtime fp32": False, "BiLSTM: KD + augmentation, int8, ONNX Runtime": True}
ORT_TEACHER = "teacher, ONNX Runtime fp32"  # so the ORT students also face the teacher on the same runtime
SHAPES = ("8x128", "1x128", "real_32x", "real_1x")


def _teacher(quick: bool) -> tuple[str, str]:
    """The cached fine-tuned teacher of the distill suite; --quick without it uses an untrained head."""
    cached = common.CACHE / "teacher-minilm-rt"
    if quick and not (cached / "config.json").is_file():
        return demo_model_path(), "MiniLM-L6 with an untrained head (--quick without a cached teacher)"
    return common.text_teacher(), "MiniLM-L6 fine-tuned on Rotten Tomatoes"


def _labels_everywhere(augmented: Dataset) -> Dataset:
    """Give each augmented row its original's label (classic augmentation, for the no-KD ablation)."""
    labels, current = [], None
    for label, flag in zip(augmented["labels"], augmented["is_augmented"]):
        current = current if flag else label
        labels.append(current)
    return augmented.remove_columns("labels").add_column("labels", labels)


def transfer_sets(teacher, tokenizer, train: Dataset, copies: int, seed: int = 0) -> tuple[dict, dict]:
    start = time.perf_counter()
    augmented = augment_dataset(train, AugmentationConfig(copies=copies, seed=seed), tokenizer, teacher)
    augment_s = time.perf_counter() - start
    start = time.perf_counter()
    labelled = label_with_teacher(teacher, augmented)
    label_s = time.perf_counter() - start
    sets = {
        "augmented": labelled,
        "original": labelled.filter(lambda row: not row["is_augmented"]),
        "augmented_labelled": _labels_everywhere(augmented),
    }
    timing = {"augment_s": augment_s, "label_s": label_s, "transfer_rows": len(labelled), "train_rows": len(train)}
    print(f"[rnn] transfer set: {len(labelled)} rows, augmented in {augment_s:.0f}s, labelled in {label_s:.0f}s")
    return sets, timing


def _args(out: str, epochs: float, max_steps: int, settings: dict, batch: int = 32) -> DistillationConfig:
    return DistillationConfig(**common.train_kwargs(out, num_train_epochs=epochs, max_steps=max_steps,
                                                    per_device_train_batch_size=batch, learning_rate=1e-3,
                                                    warmup_steps=50, train_sampling_strategy="group_by_length",
                                                    optim="adamw_torch_fused"),
                              **settings)  # fmt: skip


def train_student(teacher, data: Dataset, settings: dict, collator, epochs: float, max_steps: int, live: bool,
                  student_spec: dict = STUDENT):  # fmt: skip
    """A fresh BiLSTM trained on ``data``: from the stored logits, or (``live``) with a teacher forward per step."""
    torch.manual_seed(0)
    student = rnn_student_from_teacher(teacher, **student_spec)
    if live:
        data = data.remove_columns("teacher_logits")
    trainer = DistillationTrainer(model=student, teacher_model=teacher if live else None,
                                  args=_args(tempfile.mkdtemp(), epochs, max_steps, settings), train_dataset=data,
                                  data_collator=collator)  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    return student, time.perf_counter() - start, trainer.state.global_step


@torch.inference_mode()
def real_length_ratios(teacher, models: dict, test: Dataset, collator, batch_size: int, rows: int) -> dict:
    """Latency over the first ``rows`` test rows at their real lengths (each batch padded to its longest row),
    interleaved per batch, as a ratio to the teacher: ``{name: ratio}`` plus ``__teacher_ms__`` per batch."""
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in test.column_names]
    rows_ = test.select(range(min(rows, len(test)))).select_columns(keep)
    batches = [collator([rows_[j] for j in range(i, min(i + batch_size, len(rows_)))])
               for i in range(0, len(rows_), batch_size)]  # fmt: skip
    everyone = {"__teacher__": teacher, **models}
    totals = {name: [] for name in everyone}
    for model in everyone.values():
        model.eval()(**batches[0])
    names = list(everyone)
    for index, batch in enumerate(batches):
        # rotate who goes first: the model timed right after the teacher finds the caches cold, and on one-row
        # batches that alone made the first-listed student look 2x slower than its identical siblings
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            everyone[name](**batch)
            totals[name].append(time.perf_counter() - start)
    reference = sum(totals["__teacher__"])
    result = {name: sum(t) / reference for name, t in totals.items() if name != "__teacher__"}
    result["__teacher_ms__"] = 1000 * statistics.mean(totals["__teacher__"])
    return result


def ort_rows(teacher, best, int8, tokenizer, test: Dataset, collator, quick: bool) -> list[dict]:
    """The KD + augmentation student (and its int8) exported with `export_onnx` and run on ONNX Runtime, beside
    the teacher on ONNX Runtime: accuracy, export check, latency ratios to the torch teacher (interleaved, their
    own rounds) and ``fastest_teacher_{shape}``: the ratio to whichever teacher runtime was faster at that shape,
    so a student is never judged against the slower teacher; [] without the onnx extra."""
    try:
        from hf_compress.export import export_onnx
        from hf_compress.export.runtime import OrtModel

        from .onnx import _logits
    except ImportError as err:
        print(f"[rnn] no ONNX Runtime rows: {err}", flush=True)
        return []
    work = Path(tempfile.mkdtemp(prefix="rnn-onnx-"))
    sessions, exports = {}, {}
    sources = {ORT_TEACHER: teacher, **{name: int8 if quantized else best for name, quantized in ORT.items()}}
    for index, (name, model) in enumerate(sources.items()):
        report = export_onnx(model, work / str(index), processor=tokenizer)
        exports[name] = {"export_max_diff": report.max_abs_diff, "export_fidelity": report.fidelity,
                         "size_mb": report.onnx_mb}  # fmt: skip
        sessions[name] = OrtModel(work / str(index) / "model.onnx")
    latency = common.latency_ratios(teacher, sessions, reps=5 if quick else 20)
    real = {
        f"real_{batch}x": real_length_ratios(teacher, sessions, test, collator, batch, 64 if quick else rows_)
        for batch, rows_ in ((32, 512), (1, 128))
    }
    labels = torch.tensor(test["labels"])
    teacher_acc = float((_logits(teacher, test, collator).argmax(-1) == labels).float().mean())
    ort_teacher = {**latency[ORT_TEACHER], **{k: v[ORT_TEACHER] for k, v in real.items()}}
    rows = []
    for name, session in sessions.items():
        acc = float((_logits(session, test, collator).argmax(-1) == labels).float().mean())
        lat = {**latency[name], **{k: v[name] for k, v in real.items()}}
        fastest = {f"fastest_teacher_{k}": lat[k] / min(1.0, ort_teacher[k]) for k in SHAPES}
        rows.append({"model": name, "accuracy": acc, "pct_teacher": 100 * acc / teacher_acc,
                     "lat_8x128": lat["8x128"], "lat_1x128": lat["1x128"], "speedup_8x128": 1 / lat["8x128"],
                     "speedup_1x128": 1 / lat["1x128"], **{f"lat_{k}": lat[k] for k in real}, **fastest,
                     **exports[name]})  # fmt: skip
        print(f"[rnn] {name}: acc {acc:.4f} 8x128 {lat['8x128']:.3f} 1x128 {lat['1x128']:.3f}", flush=True)
    return rows


def run(quick: bool, epochs: float, train_limit: int | None, copies: int, live_steps: int,
        hidden_size: int = STUDENT["hidden_size"]) -> dict:  # fmt: skip
    spec = {**STUDENT, "hidden_size": hidden_size}
    teacher_path, teacher_note = _teacher(quick)
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    data = common.rt_data(tokenizer, train_limit=train_limit)
    test = data["test"].select(range(128)) if quick else data["test"]
    collator = DataCollatorWithPadding(tokenizer)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path, num_labels=2).eval()
    sets, timing = transfer_sets(teacher, tokenizer, data["train"], copies)

    entries = {}
    for name, (which, settings) in VARIANTS.items():
        max_steps = 4 if quick else -1
        student, seconds, steps = train_student(teacher, sets[which], settings, collator, epochs, max_steps,
                                                live=False, student_spec=spec)  # fmt: skip
        entries[name] = {"model": student, "compress_s": seconds, "steps": steps, "transfer_rows": len(sets[which])}
        print(f"[rnn] {name}: {steps} steps in {seconds:.0f}s", flush=True)
    best = entries["BiLSTM: KD + augmentation"]
    start = time.perf_counter()
    int8 = quantize(copy.deepcopy(best["model"]))
    entries[INT8] = {"model": int8, "compress_s": best["compress_s"] + time.perf_counter() - start}

    # Training speed: the same KD + augmentation steps from the stored logits and with a live teacher.
    per_step = {}
    for live in (False, True):
        _, seconds, steps = train_student(teacher, sets["augmented"], KD, collator, epochs, live_steps, live=live,
                                          student_spec=spec)  # fmt: skip
        per_step["live" if live else "cached"] = seconds / steps
    projected_live = per_step["live"] * best["steps"]
    training = {
        **timing,
        "s_per_step_cached": per_step["cached"],
        "s_per_step_live": per_step["live"],
        "live_over_cached": per_step["live"] / per_step["cached"],
        "kd_aug_train_s_cached": best["compress_s"],
        "kd_aug_train_s_cached_incl_labelling": best["compress_s"] + timing["label_s"],
        "kd_aug_train_s_live_projected": projected_live,
        "live_steps_measured": live_steps,
    }
    print(f"[rnn] s/step cached {per_step['cached']:.3f}, live {per_step['live']:.3f}", flush=True)

    rows = common.measure(teacher, entries, test, collator, reps=5 if quick else 20)
    models = {name: entry["model"] for name, entry in entries.items()}
    real = {
        f"real_{batch}x": real_length_ratios(teacher, models, test, collator, batch, 64 if quick else rows_)
        for batch, rows_ in ((32, 512), (1, 128))
    }
    for row in rows:
        for key, ratios in real.items():
            row[f"lat_{key}"] = ratios.get(row["model"], 1.0)
        row["speedup_1x128"] = 1 / row["lat_1x128"]
    rows += ort_rows(teacher, best["model"], int8, tokenizer, test, collator, quick)
    return {"teacher": teacher_note, "rows": rows, "training": training, "real_length_teacher_ms": {
        k: v["__teacher_ms__"] for k, v in real.items()}, "copies": copies, "epochs": epochs,
            "student": spec}  # fmt: skip


def report(result: dict) -> str:
    extra = [
        ("lat_real_32x", "latency real lengths 32/batch (ratio)"),
        ("lat_real_1x", "latency real 1/batch (ratio)"),
    ]
    columns = common.columns(extra=extra, after="lat_1x128")
    spec = result.get("student", STUDENT)
    if "student" not in result:  # written before the real-length timing rotated the models' order
        notes = ["\nMeasured before the real-length timing rotated the order of the models: the first student "
                 "after the teacher ran with cold caches, so its 'real 1/batch' ratio reads high (compare it with "
                 "its identical siblings)."]  # fmt: skip
    else:
        notes = []
    student = f"{spec['hidden_size']} units per direction, {spec['embedding_size']}-wide embeddings"
    lines = [f"### Text: {result['teacher']} -> one-layer BiLSTM (Tang et al. 2019), {student}\n",
             common.markdown_table(result["rows"], columns)]  # fmt: skip
    t = result["training"]
    lines.append(
        f"\nTransfer set: {t['train_rows']} originals + {result['copies']} augmented copies each = "
        f"{t['transfer_rows']} rows; augmentation {t['augment_s']:.0f}s, teacher labelling {t['label_s']:.0f}s (once)."
        f"\nTraining KD + augmentation: {t['s_per_step_cached']:.3f} s/step from stored logits vs "
        f"{t['s_per_step_live']:.3f} s/step with a live teacher ({t['live_over_cached']:.1f}x); "
        f"{t['kd_aug_train_s_cached']:.0f}s cached "
        f"({t['kd_aug_train_s_cached_incl_labelling']:.0f}s with the labelling) "
        f"vs ~{t['kd_aug_train_s_live_projected']:.0f}s projected with a live teacher."
    )
    for row in result["rows"]:
        if "fastest_teacher_8x128" in row:
            speeds = ", ".join(f"{1 / row[f'fastest_teacher_{k}']:.1f}x at {k}" for k in SHAPES)
            lines.append(f"{row['model']}, speed-up over the faster of the two teacher runtimes (torch / ONNX "
                         f"Runtime) at each shape: {speeds}.")  # fmt: skip
    return "\n".join(lines + notes)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny subsets and a few steps (plumbing check)")
    parser.add_argument("--epochs", type=float, default=2.0, help="student training epochs (default 2)")
    parser.add_argument("--train-limit", type=int, default=None, help="original training rows (default 3000)")
    parser.add_argument("--copies", type=int, default=2, help="augmented copies per original (default 2)")
    parser.add_argument("--live-steps", type=int, default=None, help="steps timed with a live teacher (default 30)")
    parser.add_argument("--threads", type=int, default=common.THREADS, help="torch threads (default 2)")
    parser.add_argument("--hidden-size", type=int, default=STUDENT["hidden_size"],
                        help="BiLSTM units per direction (default: Tang et al.'s 150)")  # fmt: skip
    parser.add_argument("--name", help="JSON file name under benchmarks/results/<date>/ (default rnn)")
    args = parser.parse_args(argv)
    common.setup(threads=args.threads)
    train_limit = args.train_limit or (96 if args.quick else 3000)
    live_steps = args.live_steps or (3 if args.quick else 30)
    result = run(args.quick, args.epochs, train_limit, args.copies, live_steps, args.hidden_size)
    payload = {"suite": "rnn", "argv": argv, "quick": args.quick, "text": result}
    path = common.write_json(args.name or ("rnn-quick" if args.quick else "rnn"), payload)
    print(report(result))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
