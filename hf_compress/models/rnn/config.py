"""`RNNStudentConfig`: a recurrent (RNN / LSTM / GRU) text classifier, the Tang et al. (2019) BiLSTM student."""

from __future__ import annotations

from typing import Literal, get_args

from transformers import PretrainedConfig

CellType = Literal["rnn", "lstm", "gru"]
PoolingType = Literal["max", "mean", "last"]
MODEL_TYPE = "hf_compress_rnn"


def _choice(name: str, value, literal) -> None:
    if value not in get_args(literal):
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(get_args(literal))}.")


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}.")


class RNNStudentConfig(PretrainedConfig):
    """Configuration of `RNNStudentForSequenceClassification`.

    cell: ``rnn`` (tanh), ``lstm`` or ``gru``, run by torch's fused kernels; bidirectional: both directions,
    concatenated; num_layers: stacked recurrent layers; hidden_size: units per direction; embedding_size: width
    of the word embeddings (the teacher's, or smaller when projected); pooling: how the per-token states become
    one vector: ``max`` / ``mean`` over real tokens, or ``last`` (the final state of each direction);
    classifier_hidden_size: a ReLU layer before the output layer (Tang et al. use one), 0 for none; dropout:
    on the embeddings, between recurrent layers and before the classifier. Text pairs are read as one sequence
    (``[CLS] a [SEP] b [SEP]``); ``token_type_ids`` are accepted and ignored.
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        vocab_size: int = 30522,
        embedding_size: int = 300,
        hidden_size: int = 300,
        num_layers: int = 1,
        cell: str = "lstm",
        bidirectional: bool = True,
        pooling: str = "max",
        classifier_hidden_size: int = 0,
        dropout: float = 0.1,
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        **kwargs,
    ) -> None:
        for name, value in (("vocab_size", vocab_size), ("embedding_size", embedding_size),
                            ("hidden_size", hidden_size), ("num_layers", num_layers)):  # fmt: skip
            _positive_int(name, value)
        _choice("cell", cell, CellType)
        _choice("pooling", pooling, PoolingType)
        if not isinstance(classifier_hidden_size, int) or classifier_hidden_size < 0:
            raise ValueError(f"classifier_hidden_size must be an int >= 0 (0 = none), got {classifier_hidden_size!r}.")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}.")
        if not isinstance(bidirectional, bool):
            raise ValueError(f"bidirectional must be true or false, got {bidirectional!r}.")
        if pad_token_id is None or not 0 <= pad_token_id < vocab_size:
            raise ValueError(f"pad_token_id must be a token id in 0..{vocab_size - 1}, got {pad_token_id!r}.")
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        self.bidirectional = bidirectional
        self.pooling = pooling
        self.classifier_hidden_size = classifier_hidden_size
        self.dropout = float(dropout)
        self.initializer_range = initializer_range
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1
