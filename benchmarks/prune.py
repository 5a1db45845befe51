"""Pruning benchmark: HomoDistil vs one-shot pruning + KD vs a truncated student + KD, at the same final
shape and the same number of training steps, on the MiniLM-L6 Rotten Tomatoes teacher; plus pruned + int8.

    python -m benchmarks prune            # ~25 min on 2 CPU cores
    python -m benchmarks prune --quick    # a few steps on small subsets (plumbing check)
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from hf_compress import (
    DistillationConfig,
    DistillationTrainer,
    HomoDistilConfig,
    HomoDistilTrainer,
    QuantizationConfig,
    quantize,
    slice_model,
)
from hf_compress.models.structure import model_structure
from hf_compress.prune.masks import StructureMasks

from . import common

SHAPE = dict(target_hidden_size=192, target_num_heads=6, target_intermediate_size=768)
COLUMNS = [
    ("model", "model"),
    ("shape", "hidden / heads / FFN"),
    ("accuracy", "test acc"),
    ("pct_teacher", "% of teacher"),
    ("params_m", "params (M)"),
    ("size_mb", "MB on disk"),
    ("lat_8x128", "latency 8x128 (ratio)"),
    ("lat_1x128", "latency 1x128 (ratio)"),
    ("speedup_8x128", "speed-up 8x128"),
    ("train_s", "compress wall s"),
]


def _common_args(out: str, steps: int) -> dict:
    return common.train_kwargs(out, max_steps=steps, learning_rate=1e-4, warmup_steps=20, temperature=2.0,
                               kd_weight=1.0, hidden_weight=1.0)  # fmt: skip


def truncated_student(teacher):
    """The teacher sliced to the target shape keeping the *first* channels / heads / neurons (no scores)."""
    masks = StructureMasks.full(model_structure(teacher))
    masks.hidden[SHAPE["target_hidden_size"] :] = 0
    masks.heads[:, SHAPE["target_num_heads"] :] = 0
    masks.ffn[:, SHAPE["target_intermediate_size"] :] = 0
    return slice_model(teacher, masks)


def run(quick: bool, steps: int) -> dict:
    teacher_path = common.text_teacher()
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    data = common.rt_data(tokenizer, train_limit=256 if quick else None)
    test = data["test"].select(range(128)) if quick else data["test"]
    collator = DataCollatorWithPadding(tokenizer)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path).eval()
    steps = 4 if quick else steps
    end = max(2, int(0.6 * steps))
    students = {}

    def train(name, trainer):
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        model = trainer.sliced_model() if isinstance(trainer, HomoDistilTrainer) else trainer.model
        model.set_attn_implementation("sdpa")
        students[name] = (model.eval(), seconds)
        print(f"[prune] {name}: {seconds:.0f}s", flush=True)

    args = HomoDistilConfig(
        **_common_args(tempfile.mkdtemp(), steps),
        **SHAPE,
        prune_start_step=0,
        prune_end_step=end,
        prune_every=max(1, end // 20),
    )
    train(
        "HomoDistil (PLATON, cubic)",
        HomoDistilTrainer(teacher_model=teacher, args=args, train_dataset=data["train"], data_collator=collator),
    )
    args = HomoDistilConfig(
        **_common_args(tempfile.mkdtemp(), steps),
        **SHAPE,
        pruning_schedule="oneshot",
        importance="magnitude",
        prune_start_step=0,
    )
    train(
        "one-shot magnitude prune + KD",
        HomoDistilTrainer(teacher_model=teacher, args=args, train_dataset=data["train"], data_collator=collator),
    )
    args = DistillationConfig(**_common_args(tempfile.mkdtemp(), steps))
    train(
        "truncated student + KD",
        DistillationTrainer(
            model=truncated_student(teacher),
            teacher_model=teacher,
            args=args,
            train_dataset=data["train"],
            data_collator=collator,
        ),
    )
    homodistil = students["HomoDistil (PLATON, cubic)"][0]
    start = time.perf_counter()
    int8 = quantize(copy.deepcopy(homodistil), QuantizationConfig(method="int8_dynamic"))
    students["HomoDistil + int8_dynamic"] = (
        int8,
        students["HomoDistil (PLATON, cubic)"][1] + time.perf_counter() - start,
    )

    teacher_acc = common.evaluate_accuracy(teacher, test, collator)
    latency = common.latency_ratios(teacher, {n: m for n, (m, _) in students.items()}, reps=5 if quick else 20)
    rows = [
        dict(
            model="teacher (MiniLM-L6)",
            shape="384 / 12 / 1536",
            accuracy=teacher_acc,
            pct_teacher=100.0,
            params_m=common.count_params(teacher) / 1e6,
            size_mb=common.size_on_disk_mb(teacher),
            lat_8x128=1.0,
            lat_1x128=1.0,
            speedup_8x128=1.0,
        )
    ]
    for name, (model, seconds) in students.items():
        acc = common.evaluate_accuracy(model, test, collator)
        c = model.config
        rows.append(
            dict(
                model=name,
                shape=f"{c.hidden_size} / {c.num_attention_heads} / {c.intermediate_size}",
                accuracy=acc,
                pct_teacher=100 * acc / teacher_acc,
                params_m=common.count_params(model) / 1e6,
                size_mb=common.size_on_disk_mb(model),
                lat_8x128=latency[name]["8x128"],
                lat_1x128=latency[name]["1x128"],
                speedup_8x128=1 / latency[name]["8x128"],
                train_s=seconds,
            )
        )
    return {"rows": rows, "steps": steps, "prune_end_step": end}


def report(result: dict) -> str:
    head = (
        f"### Pruning: MiniLM-L6 (Rotten Tomatoes) -> hidden 192 / 6 heads / FFN 768, {result['steps']} steps each "
        f"(HomoDistil reaches the shape at step {result['prune_end_step']})\n"
    )
    return head + "\n" + common.markdown_table(result["rows"], COLUMNS)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=300, help="training steps of every variant (default 300)")
    args = parser.parse_args(argv)
    common.setup()
    result = run(args.quick, args.steps)
    path = common.write_json("prune-quick" if args.quick else "prune", {"suite": "prune", "argv": argv, **result})
    print(report(result))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
