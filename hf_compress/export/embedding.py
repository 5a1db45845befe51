"""Bare encoders export as embedders: the graph pools the token states into a sentence embedding as the model's
sentence-transformers pipeline does (its Pooling mode, mean or CLS, and its Normalize when it has one; a folder
without ``modules.json`` pools the mean of the real tokens, unnormalised), and returns the token states beside it
(``token_embeddings``, what sentence-transformers' own ONNX backend pools in Python).

The export is checked on ``sentence_embedding`` like any head (max |diff|, int8 noise), plus the smallest cosine
between ONNX Runtime's and PyTorch's embeddings over the checked rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..distill.losses import pool_tokens, pooled
from ..models.sentence import read_sentence_modules, sentence_pooling_mode

SENTENCE_EMBEDDING, TOKEN_EMBEDDINGS = "sentence_embedding", "token_embeddings"
EMBEDDING_OUTPUTS = [SENTENCE_EMBEDDING, TOKEN_EMBEDDINGS]
CHECKED_OUTPUTS = [SENTENCE_EMBEDDING]


@dataclass(frozen=True)
class Pooling:
    """How the graph turns token states into the sentence embedding."""

    mode: Literal["mean", "cls"] = "mean"
    normalize: bool = False

    def describe(self) -> str:
        return f"{self.mode} pooling" + (", L2-normalised" if self.normalize else "")


def pooling_of(source: Path | None) -> Pooling:
    """The sentence-transformers pipeline's pooling in ``source`` (mean, unnormalised, without one)."""
    modules = read_sentence_modules(source)
    if modules is None:
        return Pooling()
    return Pooling(mode=sentence_pooling_mode(modules), normalize=modules.normalize)


def embedding_outputs(out, attention_mask: Tensor | None, pooling: Pooling, names: list[str]) -> tuple[Tensor, ...]:
    """``names`` of (sentence_embedding, token_embeddings) from an encoder's output (``last_hidden_state``)."""
    hidden = out["last_hidden_state"]
    vector = (pooled if pooling.normalize else pool_tokens)(hidden, attention_mask, pooling.mode)
    values = {SENTENCE_EMBEDDING: vector, TOKEN_EMBEDDINGS: hidden}
    return tuple(values[name] for name in names)


class PooledReference(nn.Module):
    """The PyTorch side of the check: the encoder's embedding outputs as a mapping (what `check.verify` reads)."""

    def __init__(self, model: nn.Module, pooling: Pooling) -> None:
        super().__init__()
        self.model, self.pooling = model, pooling

    @property
    def config(self):  # (what ORT's optimizer reads: heads and width)
        return self.model.config

    def forward(self, **inputs: Tensor) -> dict[str, Tensor]:
        values = embedding_outputs(self.model(**inputs), inputs.get("attention_mask"), self.pooling, EMBEDDING_OUTPUTS)
        return dict(zip(EMBEDDING_OUTPUTS, values))


@torch.inference_mode()
def min_cosine(session, reference: PooledReference, inputs: dict[str, Tensor]) -> float:
    """The smallest cosine similarity between ONNX Runtime's and PyTorch's sentence embeddings over ``inputs``."""
    accepted = {i.name for i in session.get_inputs()}
    (got,) = session.run([SENTENCE_EMBEDDING], {k: v.numpy() for k, v in inputs.items() if k in accepted})
    ours, theirs = torch.from_numpy(got).float(), reference(**inputs)[SENTENCE_EMBEDDING].float()
    return float(F.cosine_similarity(ours, theirs, dim=-1).min())
