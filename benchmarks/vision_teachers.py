"""Fashion-MNIST teachers worth distilling: a small ResNet and a 6-layer ViT, trained here from scratch on the full
60k training images with light augmentation (random shifts of up to 2 pixels, horizontal flips) and a cosine
schedule, each cached under benchmarks/cache with the test accuracy and the wall time it took.

python -m benchmarks.vision_teachers [--vit-epochs 10] [--convnet-epochs 6]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from transformers import (
    AutoModelForImageClassification,
    ResNetConfig,
    Trainer,
    TrainingArguments,
    ViTConfig,
)

from hf_compress.data.demo import FASHION_MNIST_LABELS

from . import common

ID2LABEL = dict(enumerate(FASHION_MNIST_LABELS))
LABELS = {"num_labels": 10, "id2label": ID2LABEL, "label2id": {v: k for k, v in ID2LABEL.items()}}
CONVNET = ResNetConfig(
    num_channels=1, embedding_size=64, hidden_sizes=[64, 128, 256], depths=[2, 2, 2], layer_type="basic", **LABELS
)
VIT = ViTConfig(
    image_size=28, patch_size=4, num_channels=1, hidden_size=128, num_hidden_layers=6, num_attention_heads=4,
    intermediate_size=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **LABELS,
)  # fmt: skip
KINDS = {"convnet": CONVNET, "vit": VIT}


def shift_and_flip(batch: list[dict], pad: int = 2, generator: torch.Generator | None = None) -> dict:
    """A collator: stack the batch, shift each image by up to ``pad`` pixels (zero-padded in pixel space, i.e. at
    the normalised value of black) and flip half of them left-right."""
    pixels = torch.stack([row["pixel_values"] for row in batch])
    labels = torch.tensor([int(row["labels"]) for row in batch])
    n, _, h, w = pixels.shape
    padded = torch.nn.functional.pad(pixels, (pad, pad, pad, pad), value=-1.0)
    dx, dy = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    shifted = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=generator) < 0.5
    shifted[flip] = shifted[flip].flip(-1)
    return {"pixel_values": shifted, "labels": labels}


def teacher_dir(kind: str) -> Path:
    return common.CACHE / f"fmnist-{kind}-teacher"


def train_teacher(kind: str, epochs: float, data=None) -> dict:
    """Train (or load from the cache) one teacher; returns {path, test accuracy, train seconds, params}."""
    out = teacher_dir(kind)
    record = out / "teacher.json"
    if record.is_file():
        return json.loads(record.read_text())
    data = data if data is not None else common.fmnist_data()
    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_config(KINDS[kind])
    lr = 1e-3 if kind == "vit" else 2e-3
    args = TrainingArguments(
        **common.train_kwargs(
            str(common.CACHE / f"work-fmnist-{kind}"), num_train_epochs=epochs, per_device_train_batch_size=128,
            learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=200, weight_decay=0.05, logging_steps=100,
            remove_unused_columns=False,
        )
    )  # fmt: skip
    start = time.perf_counter()
    Trainer(model=model, args=args, train_dataset=data["train"], data_collator=shift_and_flip).train()
    seconds = time.perf_counter() - start
    model.eval()
    accuracy = common.evaluate_accuracy(model, data["test"])
    model.save_pretrained(str(out))
    shutil.rmtree(common.CACHE / f"work-fmnist-{kind}", ignore_errors=True)
    result = {
        "kind": kind, "path": str(out), "epochs": epochs, "test_accuracy": accuracy, "train_s": seconds,
        "params_m": common.count_params(model) / 1e6, "model_type": model.config.model_type,
    }  # fmt: skip
    record.write_text(json.dumps(result, indent=2))
    print(f"[teacher] {kind}: test accuracy {accuracy:.4f} after {epochs} epochs, {seconds:.0f} s", flush=True)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vit-epochs", type=float, default=10.0)
    parser.add_argument("--convnet-epochs", type=float, default=6.0)
    args = parser.parse_args(argv)
    common.setup()
    data = common.fmnist_data()
    for kind, epochs in (("convnet", args.convnet_epochs), ("vit", args.vit_epochs)):
        print(json.dumps(train_teacher(kind, epochs, data)), flush=True)


if __name__ == "__main__":
    main()
