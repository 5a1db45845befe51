"""What the pruning suites share (`prune` and `prune_ablation`): the target shapes, the training settings, the
teacher and data of each half, one HomoDistil run, and the seed statistics of a row."""

from __future__ import annotations

import tempfile
import time

from transformers import (
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
)

from hf_compress import HomoDistilConfig, HomoDistilTrainer

from . import common, peers

# Half of every width: hidden, heads and FFN (Torch-Pruning is driven by one ratio, so the peer gets the same).
SHAPES = {
    "text": dict(target_hidden_size=192, target_num_heads=6, target_intermediate_size=768),
    "vision": dict(target_hidden_size=64, target_num_heads=2, target_intermediate_size=256),
}
# A second, wider HomoDistil target (three quarters of every width), for the size / accuracy trade-off.
WIDER = {
    "text": dict(target_hidden_size=288, target_num_heads=9, target_intermediate_size=1152),
    "vision": dict(target_hidden_size=96, target_num_heads=3, target_intermediate_size=384),
}
TRAINING = {  # per half: batch size and learning rate (same for every variant)
    "text": dict(per_device_train_batch_size=32, learning_rate=1e-4),
    "vision": dict(per_device_train_batch_size=64, learning_rate=3e-4),
}
# HomoDistil's objective in the paper includes attention KD; the rows trained by HomoDistilTrainer (HomoDistil and
# one-shot pruning + KD, whose students keep the teacher's head count) add it, on the heads the student keeps.
HOMODISTIL_ATTENTION = dict(attention_weight=1.0)


def _shape(model) -> str:
    hidden, heads, ffn = peers.structure_of(model)
    return f"{hidden} / {heads} / {ffn}"


def _teacher_and_data(kind: str, quick: bool, strong: bool = False):
    """(teacher, train set, test set, collator) of one half, shared by `run` and `prune_ablation.ablation`.
    ``strong``: the vision teacher is `vision_teachers`' 6-layer ViT trained on all 60k images (10 epochs,
    augmented) instead of the 2-epoch one."""
    if kind == "text":
        teacher_path = common.text_teacher()
        tokenizer = AutoTokenizer.from_pretrained(teacher_path)
        data = common.rt_data(tokenizer, train_limit=256 if quick else None)
        train_set, test = data["train"], data["test"].select(range(128)) if quick else data["test"]
        collator = DataCollatorWithPadding(tokenizer)
        teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path).eval()
    else:
        from .vision_teachers import train_teacher

        teacher_path = train_teacher("vit", 10.0)["path"] if strong else common.vision_teacher(2.0, 20000)
        data = common.fmnist_data(train_limit=256 if quick else 20000, test_limit=256 if quick else None)
        train_set, test, collator = data["train"], data["test"], None
        teacher = AutoModelForImageClassification.from_pretrained(teacher_path).eval()
    return teacher, train_set, test, collator


def _seed_statistics(row: dict) -> None:
    """A row trained at several seeds: ``seed_accuracies`` (the first seed's, measured, first), their mean and
    sample standard deviation. A row trained once loses the empty list."""
    further = row.pop("seed_accuracies", [])
    if not further:
        return
    accuracies = [row["accuracy"], *further]
    mean = sum(accuracies) / len(accuracies)
    sd = (sum((a - mean) ** 2 for a in accuracies) / (len(accuracies) - 1)) ** 0.5
    row.update(seed_accuracies=accuracies, mean_accuracy=mean, sd_accuracy=sd)


def _train_homodistil(teacher, train_set, collator, kind: str, steps: int, settings: dict, seed: int = 0):
    """(sliced model on sdpa attention, training seconds, final masks) of one HomoDistil run with the suite's
    objective (KD + hidden KD) and ``settings`` (shape, schedule, the variant's change, its ``importance`` scorer);
    shared by `prune_ablation.ablation` and `frontier`."""
    kwargs = common.train_kwargs(tempfile.mkdtemp(), max_steps=steps, warmup_steps=20, temperature=2.0,
                                 kd_weight=1.0, hidden_weight=1.0, **TRAINING[kind], seed=seed)  # fmt: skip
    trainer = HomoDistilTrainer(teacher_model=teacher, args=HomoDistilConfig(**kwargs, **settings),
                                train_dataset=train_set, data_collator=collator)  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model = trainer.sliced_model().eval()
    model.set_attn_implementation("sdpa")
    return model, seconds, trainer.pruner.masks


def _with_seed_columns(row: dict) -> dict:
    if "mean_accuracy" not in row:
        return row
    per_seed = " / ".join(f"{a:.4f}" for a in row["seed_accuracies"])
    return {**row, "per_seed": per_seed, "mean_sd": f"{row['mean_accuracy']:.4f} +- {row['sd_accuracy']:.4f}"}
