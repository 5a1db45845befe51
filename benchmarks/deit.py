"""DeiT's tables on Fashion-MNIST (Touvron et al. 2021, Tables 2-3): which teacher and which distillation teach a ViT
student best. Teachers (`benchmarks.vision_teachers`, cached): a ResNet and a 6-layer ViT trained here. Students: a
3-layer ViT (hidden 128, 4 heads, patch 4) from scratch, all at the same steps, data order and augmentation:

- labels only (no teacher),
- soft KD (DeiT's: tau 3, lambda 0.1: 0.9 CE + 0.1 tau^2 KL),
- hard KD through the class token (0.5 CE on the labels + 0.5 CE on the teacher's argmax, one head),
- hard KD with the distillation token (DeiT's two heads; inference averages them; each head also measured alone),

each from the convnet and from the ViT teacher, for every seed. Results are written after every run.

python -m benchmarks deit                      # 3 seeds, 400 steps a student (~45 min on 2 cores, teachers cached)
python -m benchmarks deit --quick              # a few steps on small subsets: the plumbing
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

from hf_compress import DistillationConfig, DistillationTrainer, make_deit_student

from . import common
from .vision_teachers import KINDS, LABELS, shift_and_flip, train_teacher

STUDENT = dict(image_size=28, patch_size=4, num_channels=1, hidden_size=128, num_hidden_layers=3,
               num_attention_heads=4, intermediate_size=512, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0)  # fmt: skip
LOSSES = {
    "labels only": dict(kd_weight=0.0, hard_label_weight=1.0),
    "soft KD": dict(kd_loss_type="soft", temperature=3.0, kd_weight=0.1, hard_label_weight=0.9),
    "hard KD, class token": dict(kd_loss_type="hard", kd_weight=0.5, hard_label_weight=0.5),
    "hard KD, distillation token": dict(kd_loss_type="hard", kd_weight=0.5, hard_label_weight=0.5),
}
TEACHERS = ("convnet", "vit")


def student(variant: str, seed: int):
    torch.manual_seed(seed)
    config = ViTConfig(**STUDENT, **LABELS)
    if variant == "hard KD, distillation token":
        return make_deit_student(config)
    return ViTForImageClassification(config)


@torch.no_grad()
def accuracies(model, test, teacher=None, batch_size: int = 500) -> dict[str, float]:
    """Test accuracy of the model's prediction (a DeiT student: the averaged heads, and each head alone) and the
    agreement of that prediction with the teacher's."""
    model.eval()
    counts, total = {}, 0
    for start in range(0, len(test), batch_size):
        rows = test[start : start + batch_size]
        pixels, labels = rows["pixel_values"], rows["labels"]
        out = model(pixel_values=pixels)
        heads = {"accuracy": out.logits}
        if getattr(out, "cls_logits", None) is not None:
            heads |= {"accuracy_class_head": out.cls_logits, "accuracy_distillation_head": out.distillation_logits}
        for name, logits in heads.items():
            counts[name] = counts.get(name, 0) + int((logits.argmax(-1) == labels).sum())
        if teacher is not None:
            agree = int((out.logits.argmax(-1) == teacher(pixel_values=pixels).logits.argmax(-1)).sum())
            counts["teacher_agreement"] = counts.get("teacher_agreement", 0) + agree
        total += len(labels)
    return {name: count / total for name, count in counts.items()}


def train_student(variant: str, teacher_kind: str | None, teacher, data, seed: int, steps: int) -> dict:
    model = student(variant, seed)
    with tempfile.TemporaryDirectory() as tmp:
        args = DistillationConfig(
            **common.train_kwargs(
                tmp, max_steps=steps, per_device_train_batch_size=128, learning_rate=1e-3, lr_scheduler_type="cosine",
                warmup_steps=max(1, steps // 10), weight_decay=0.05, logging_steps=max(1, steps // 5), seed=seed,
                remove_unused_columns=False,
            ),
            **LOSSES[variant],
        )  # fmt: skip
        trainer = DistillationTrainer(model=model, teacher_model=teacher if teacher_kind else None, args=args,
                                      train_dataset=data["train"], data_collator=shift_and_flip)  # fmt: skip
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    row = {"variant": variant, "teacher": teacher_kind or "-", "seed": seed, "steps": steps, "train_s": seconds}
    row |= accuracies(model, data["test"], teacher if teacher_kind else None)
    print(f"[deit] {variant} / {teacher_kind}, seed {seed}: {row['accuracy']:.4f} ({seconds:.0f} s)", flush=True)
    return row


def summary(rows: list[dict]) -> list[dict]:
    """Mean and spread over seeds per (variant, teacher)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["teacher"]), []).append(row)
    out = []
    for (variant, teacher), group in groups.items():
        entry = {"variant": variant, "teacher": teacher, "seeds": len(group)}
        for key in ("accuracy", "accuracy_class_head", "accuracy_distillation_head", "teacher_agreement"):
            values = [r[key] for r in group if key in r]
            if values:
                entry[key] = statistics.mean(values)
                entry[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def verdicts(result: dict) -> list[str]:
    """DeiT's three orderings and the issue's targets, read off the seed means."""
    mean = {(r["variant"], r["teacher"]): r["accuracy"] for r in result["summary"]}
    lines = []
    labels = mean.get(("labels only", "-"))
    token = mean.get(("hard KD, distillation token", "convnet"))
    if labels is not None and token is not None:
        gain = 100 * (token - labels)
        lines.append(f"distillation token from the convnet vs labels only: {gain:+.2f} points (target >= +2)")
    for variant in LOSSES:
        if variant != "labels only" and (variant, "convnet") in mean and (variant, "vit") in mean:
            diff = 100 * (mean[(variant, "convnet")] - mean[(variant, "vit")])
            lines.append(f"{variant}: convnet teacher vs ViT teacher {diff:+.2f} points (DeiT: convnet >= ViT)")
    for teacher in TEACHERS:
        a, b = mean.get(("hard KD, distillation token", teacher)), mean.get(("hard KD, class token", teacher))
        if a is not None and b is not None:
            lines.append(f"{teacher} teacher: distillation token vs class-token hard KD {100 * (a - b):+.2f} points")
    vit = result["teachers"].get("vit", {}).get("test_accuracy")
    if vit and mean:
        best_key = max(mean, key=mean.get)
        lines.append(
            f"ViT teacher {vit:.4f} (target >= 0.90); best 3-layer student ({best_key[0]}, {best_key[1]}) "
            f"{mean[best_key]:.4f} = {100 * mean[best_key] / vit:.1f} % of it (target >= 97 %)"
        )
    return lines


def report(result: dict) -> str:
    teachers = [
        f"- {kind}: {t['model_type']}, {t['params_m']:.2f} M params, test {t['test_accuracy']:.4f} after "
        f"{t['epochs']:g} epochs ({t['train_s'] / 60:.0f} min)"
        for kind, t in result["teachers"].items()
    ]
    columns = [("variant", "student"), ("teacher", "teacher"), ("seeds", "seeds"), ("accuracy", "test acc (mean)"),
               ("accuracy_sd", "sd"), ("accuracy_class_head", "class head alone"),
               ("accuracy_distillation_head", "distillation head alone"),
               ("teacher_agreement", "agrees with teacher")]  # fmt: skip
    return "\n".join(
        ["Teachers:", *teachers, "", common.markdown_table(result["summary"], columns), "", *verdicts(result)]
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small subsets, a few steps, teachers untrained")
    parser.add_argument("--steps", type=int, default=400, help="training steps per student (batch 128)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--name", help="JSON file name under benchmarks/results/<date>/ (default deit)")
    args = parser.parse_args(argv)
    common.setup()
    name = args.name or ("deit-quick" if args.quick else "deit")
    if args.quick:
        data = common.fmnist_data(train_limit=256, test_limit=200)
        steps, seeds = 3, args.seeds[:1]
        teachers = {kind: AutoModelForImageClassification.from_config(KINDS[kind]).eval() for kind in TEACHERS}
        info = {kind: {"model_type": m.config.model_type, "params_m": common.count_params(m) / 1e6,
                       "test_accuracy": float("nan"), "epochs": 0, "train_s": 0.0}
                for kind, m in teachers.items()}  # fmt: skip
    else:
        data = common.fmnist_data()
        steps, seeds = args.steps, args.seeds
        info = {kind: train_teacher(kind, 6.0 if kind == "convnet" else 10.0, data) for kind in TEACHERS}
        teachers = {k: AutoModelForImageClassification.from_pretrained(t["path"]).eval() for k, t in info.items()}
    result = {"suite": "deit", "argv": argv, "quick": args.quick, "student": STUDENT, "losses": LOSSES,
              "teachers": info, "rows": [], "summary": []}  # fmt: skip
    for seed in seeds:
        for variant in LOSSES:
            for kind in (None,) if variant == "labels only" else TEACHERS:
                teacher = teachers[kind] if kind else None
                result["rows"].append(train_student(variant, kind, teacher, data, seed, steps))
                result["summary"] = summary(result["rows"])
                path = common.write_json(name, result)  # after every run: a killed run keeps what it measured
    print(report(result))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
