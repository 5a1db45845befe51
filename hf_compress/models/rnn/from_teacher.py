"""`rnn_student_from_teacher`: an RNN student that shares the teacher's tokenizer, labels and word embeddings."""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedModel

from .config import RNNStudentConfig
from .modeling import RNNStudentForSequenceClassification


def pca_project(table: Tensor, size: int) -> Tensor:
    """The rows of ``table`` (V, D) on its top ``size`` principal directions: (V, size), centred.

    Keeps as much of the variance (and so of the neighbourhood structure) of the teacher's embeddings as a
    ``size``-wide table can; computed from the D x D covariance, cheap for any vocabulary size.
    """
    if not 1 <= size <= table.shape[1]:
        raise ValueError(f"embedding_size must be in 1..{table.shape[1]} (the teacher's width), got {size}.")
    centred = table.double() - table.double().mean(dim=0, keepdim=True)
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return (centred @ vectors[:, -size:].flip(-1)).to(table.dtype)


def rnn_student_from_teacher(
    teacher: PreTrainedModel,
    cell: str = "lstm",
    hidden_size: int = 300,
    embedding_size: int | None = None,
    num_layers: int = 1,
    bidirectional: bool = True,
    pooling: str = "max",
    classifier_hidden_size: int = 0,
    dropout: float = 0.1,
    freeze_embeddings: bool = False,
) -> RNNStudentForSequenceClassification:
    """A `RNNStudentForSequenceClassification` built from a fine-tuned ``teacher`` (a text classifier).

    Same vocabulary and pad id (save the teacher's tokenizer beside the student), the teacher's ``num_labels``,
    ``id2label`` / ``label2id`` and ``problem_type``; word embeddings copied from the teacher's table, or its
    PCA projection when ``embedding_size`` is smaller than the teacher's width (None = the teacher's width).
    ``freeze_embeddings`` stops their gradient (fewer trainable parameters; Tang et al. fine-tune them).
    """
    config = teacher.config
    if getattr(config, "vocab_size", None) is None or not hasattr(teacher, "get_input_embeddings"):
        raise ValueError(
            f"rnn_student_from_teacher needs a text teacher with a word embedding table; "
            f"{type(teacher).__name__} has none."
        )
    table = teacher.get_input_embeddings().weight.detach().float().cpu()
    embedding_size = embedding_size or table.shape[1]
    if embedding_size < table.shape[1]:
        table = pca_project(table, embedding_size)
    elif embedding_size != table.shape[1]:
        raise ValueError(
            f"embedding_size={embedding_size} is wider than the teacher's embeddings ({table.shape[1]}); "
            "choose a size <= the teacher's width (or None to copy them as they are)."
        )
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    student_config = RNNStudentConfig(
        vocab_size=config.vocab_size,
        embedding_size=embedding_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        cell=cell,
        bidirectional=bidirectional,
        pooling=pooling,
        classifier_hidden_size=classifier_hidden_size,
        dropout=dropout,
        pad_token_id=pad,
        num_labels=config.num_labels,
        id2label=dict(config.id2label),
        label2id=dict(config.label2id),
        problem_type=config.problem_type,
    )
    student = RNNStudentForSequenceClassification(student_config)
    with torch.no_grad():
        student.embeddings.weight.copy_(table)
    student.embeddings.weight.requires_grad_(not freeze_embeddings)
    return student
