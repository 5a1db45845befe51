"""Shared fixtures: tiny BERT / ViT models built from configs and tiny in-memory datasets. Fully offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models gain nothing from intra-op threads, and spinning threads slow them badly on a busy 2-core machine.
torch.set_num_threads(1)
from datasets import Dataset  # noqa: E402
from transformers import BertConfig, ViTConfig  # noqa: E402

VOCAB = 64
SEQ = 12


# Offline CPU training arguments every trainer test starts from (tiny steps, no saves, no reporting).
TRAIN_DEFAULTS = dict(max_steps=10, per_device_train_batch_size=8, per_device_eval_batch_size=8, learning_rate=1e-3,
                      logging_steps=2, save_strategy="no", report_to=[], seed=0, use_cpu=True,
                      dataloader_pin_memory=False)  # fmt: skip
# HomoDistil to a quarter of the tiny BERT's width (32 -> 16 hidden, 4 -> 2 heads, 64 -> 32 FFN) in 6 steps
PRUNE_TARGETS = dict(target_hidden_size=16, target_num_heads=2, target_intermediate_size=32)
PRUNE_DEFAULTS = dict(hidden_weight=1.0, prune_start_step=0, prune_end_step=6, prune_every=2, **PRUNE_TARGETS)


def train_args(cls, output_dir, **overrides):
    """``cls`` (a TrainingArguments subclass) over `TRAIN_DEFAULTS`, with ``overrides`` on top."""
    return cls(output_dir=str(output_dir), **{**TRAIN_DEFAULTS, **overrides})


def bert_config(**overrides) -> BertConfig:
    values = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    values.update(overrides)
    return BertConfig(**values)


def vit_config(**overrides) -> ViTConfig:
    values = dict(
        image_size=16,
        patch_size=4,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=5,
    )
    values.update(overrides)
    return ViTConfig(**values)


def text_dataset(n: int = 32, seed: int = 0, num_labels: int = 3, padded: bool = True, regression: bool = False):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, SEQ), generator=g)
    mask = torch.ones(n, SEQ, dtype=torch.long)
    if padded:
        lengths = torch.randint(4, SEQ + 1, (n,), generator=g)
        for i, length in enumerate(lengths.tolist()):
            mask[i, length:] = 0
            ids[i, length:] = 0
    if regression:
        labels = torch.rand(n, generator=g).tolist()
    else:
        labels = torch.randint(0, num_labels, (n,), generator=g).tolist()
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels})


def image_dataset(n: int = 32, seed: int = 0, num_labels: int = 5):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(n, 1, 16, 16, generator=g)
    labels = torch.randint(0, num_labels, (n,), generator=g)
    ds = Dataset.from_dict({"pixel_values": pixels.numpy().tolist(), "labels": labels.tolist()})
    return ds.with_format("torch")


@pytest.fixture
def tmp_out(tmp_path):
    return str(tmp_path / "out")
