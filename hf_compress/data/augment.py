"""Transfer-set augmentation after Tang et al. (2019), on token ids, as a `datasets.map`-able batched function.

Each original row is kept (``is_augmented`` False) and followed by ``copies`` augmented rows (True) whose label
is -100, so a hard-label loss counts originals only while the teacher labels every row. Per token (special
tokens are never touched): with ``mask_prob`` it becomes the tokenizer's mask token (unk if it has none), else
with ``replace_prob`` one of its ``neighbours`` nearest tokens by cosine in the teacher's embedding table (the
stand-in for POS-guided word replacement; word pieces are replaced by word pieces, word starts by word starts);
then with ``ngram_prob`` the row is cut to a random n-gram (``ngram_min``..``ngram_max`` tokens) between its
special tokens. Every row's randomness is seeded by (``seed``, row index, copy), so the output does not depend
on the batch size or on the number of processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Dataset
from torch import Tensor, nn

TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class AugmentationConfig:
    """How a transfer set is augmented (defaults from Tang et al.: p_mask = p_replace = 0.1, p_ng = 0.25)."""

    copies: int = field(default=4, metadata={"help": "Augmented rows per original (Tang et al. use 20)."})
    mask_prob: float = field(default=0.1, metadata={"help": "Per-token probability of the mask token."})
    replace_prob: float = field(default=0.1, metadata={"help": "Per-token probability of a nearest neighbour."})
    ngram_prob: float = field(default=0.25, metadata={"help": "Per-row probability of n-gram sampling."})
    ngram_min: int = 1
    ngram_max: int = 5
    neighbours: int = field(default=10, metadata={"help": "Replacements are drawn from this many nearest tokens."})
    seed: int = 0
    label_column: str = "labels"
    flag_column: str = "is_augmented"

    def __post_init__(self) -> None:
        if not isinstance(self.copies, int) or self.copies < 0:
            raise ValueError(f"copies must be an int >= 0, got {self.copies!r}.")
        for name in ("mask_prob", "replace_prob", "ngram_prob"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}.")
        if self.mask_prob + self.replace_prob > 1.0:
            raise ValueError(
                f"mask_prob + replace_prob must be <= 1 (they are exclusive per token), got "
                f"{self.mask_prob} + {self.replace_prob}."
            )
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"need 1 <= ngram_min <= ngram_max, got {self.ngram_min} and {self.ngram_max}.")
        if self.neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {self.neighbours}.")


class _Neighbours:
    """Nearest tokens by cosine in an embedding table, computed for the ids that occur and cached."""

    def __init__(self, table: Tensor, tokenizer, k: int) -> None:
        self.table = nn.functional.normalize(table.detach().float().cpu(), dim=-1)
        vocab = len(self.table)
        tokens = tokenizer.convert_ids_to_tokens(list(range(vocab)))
        special = set(tokenizer.all_special_ids)
        usable = torch.tensor([i not in special and not (t or "").startswith("[unused") for i, t in enumerate(tokens)])
        self.piece = torch.tensor([(t or "").startswith("##") for t in tokens])
        self.allowed = {True: usable & self.piece, False: usable & ~self.piece}
        self.k = k
        self.cache: dict[int, np.ndarray] = {}

    def of(self, ids: list[int]) -> None:
        todo = sorted({i for i in ids if i not in self.cache and 0 <= i < len(self.table)})
        for start in range(0, len(todo), 512):
            chunk = torch.tensor(todo[start : start + 512])
            scores = self.table[chunk] @ self.table.T  # (U, V)
            for row, token in zip(scores, chunk.tolist()):
                allowed = self.allowed[bool(self.piece[token])].clone()
                allowed[token] = False
                row = row.masked_fill(~allowed, float("-inf"))
                top = row.topk(min(self.k, int(allowed.sum()))).indices
                self.cache[token] = top.numpy()

    def sample(self, token: int, rng: np.random.Generator) -> int:
        choices = self.cache.get(token)
        return token if choices is None or not len(choices) else int(choices[rng.integers(len(choices))])


def _embedding_table(source) -> Tensor:
    if isinstance(source, Tensor):
        return source
    if isinstance(source, nn.Embedding):
        return source.weight
    if hasattr(source, "get_input_embeddings"):
        return source.get_input_embeddings().weight
    raise TypeError(f"embeddings must be a teacher model, an nn.Embedding or a (V, D) tensor, got {type(source)}.")


def make_augmenter(config: AugmentationConfig, tokenizer, embeddings) -> Callable[[dict, list[int]], dict]:
    """A function for ``dataset.map(fn, batched=True, with_indices=True, remove_columns=dataset.column_names)``.

    tokenizer: the teacher's (its special tokens are kept, its mask / unk token masks); embeddings: the teacher
    (its input embeddings), an ``nn.Embedding`` or a (V, D) tensor, for the nearest-neighbour replacement.
    """
    mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    if mask_id is None:
        raise ValueError("The tokenizer has neither a mask nor an unk token to mask words with; set mask_prob=0.")
    special = set(tokenizer.all_special_ids)
    neighbours = _Neighbours(_embedding_table(embeddings), tokenizer, config.neighbours)

    def augment_row(row: dict, rng: np.random.Generator) -> dict:
        ids = list(row["input_ids"])
        attention = row.get("attention_mask") or [1] * len(ids)
        editable = [p for p, (t, a) in enumerate(zip(ids, attention)) if a and t not in special]
        for p in editable:
            u = rng.random()
            if u < config.mask_prob:
                ids[p] = mask_id
            elif u < config.mask_prob + config.replace_prob:
                ids[p] = neighbours.sample(ids[p], rng)
        keep = range(len(ids))
        if editable and rng.random() < config.ngram_prob:
            n = int(rng.integers(config.ngram_min, config.ngram_max + 1))
            if n < len(editable):
                start = int(rng.integers(0, len(editable) - n + 1))
                window = set(editable[start : start + n])
                keep = [p for p in range(len(ids)) if p in window or p not in editable]
        out = {"input_ids": [ids[p] for p in keep]}
        for column in TOKEN_COLUMNS[1:]:
            if column in row:
                out[column] = [row[column][p] for p in keep]
        return out

    def augment(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        if "input_ids" not in batch:
            raise ValueError(f"augmentation needs tokenized rows with input_ids; the batch has {sorted(batch)}.")
        if config.copies and config.replace_prob > 0:
            neighbours.of([t for ids in batch["input_ids"] for t in ids])
        columns = list(batch)
        out: dict[str, list] = {c: [] for c in [*columns, config.flag_column]}
        for j, index in enumerate(indices):
            row = {c: batch[c][j] for c in columns}
            for copy in range(config.copies + 1):
                rng = np.random.default_rng([config.seed, index, copy])
                new = row if copy == 0 else {**row, **augment_row(row, rng)}
                if copy and config.label_column in new:
                    new[config.label_column] = -100
                for c in columns:
                    out[c].append(new[c])
                out[config.flag_column].append(copy > 0)
        return out

    return augment


def augment_dataset(dataset: Dataset, config: AugmentationConfig, tokenizer, embeddings, batch_size: int = 256):
    """``dataset`` with ``config.copies`` augmented rows after each original (see `make_augmenter`)."""
    if config.flag_column in dataset.column_names:
        raise ValueError(f"The dataset already has a {config.flag_column!r} column: it is augmented already.")
    fn = make_augmenter(config, tokenizer, embeddings)
    return dataset.map(fn, batched=True, batch_size=batch_size, with_indices=True,
                       remove_columns=dataset.column_names)  # fmt: skip
