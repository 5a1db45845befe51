"""`RNNStudentForSequenceClassification`: word embeddings -> (Bi)RNN/LSTM/GRU -> pooling -> classifier.

The recurrent layers are torch's fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` over packed sequences, so padding
never changes the output: a row gives the same logits alone or padded in a batch, whatever side it is padded on.
`reference.py` holds the same recurrences written out from their equations, tested equal to these kernels.

Under ``torch.onnx.export`` (which cannot trace packing) the same result comes from unpacked one-direction runs:
the backward direction reads each row's real tokens reversed in place, so padding never reaches a real position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import _VF, Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

from .config import RNNStudentConfig

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def left_align(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Move each row's real tokens to the front, in order: (B, L) ids, (B, L) mask -> the same, right-padded.

    Left padding (or holes) would otherwise feed padding into the recurrence before the real tokens.
    """
    mask = attention_mask.bool()
    real = mask.long()
    # Stable partition without a sort (ONNX-exportable): real tokens keep their order at the front, padding after.
    destination = torch.where(mask, real.cumsum(1) - 1, real.sum(1, keepdim=True) + (1 - real).cumsum(1) - 1)
    return input_ids.scatter(1, destination, input_ids), mask.scatter(1, destination, mask)


def reverse_rows(values: Tensor, lengths: Tensor) -> Tensor:
    """(B, L, D) -> each row's first ``lengths[b]`` positions reversed in place, the rest (padding) untouched."""
    positions = torch.arange(values.shape[1], device=values.device)[None, :]
    index = torch.where(positions < lengths[:, None], lengths[:, None] - 1 - positions, positions)
    return values.gather(1, index[..., None].expand_as(values))


_KERNELS = {"rnn": _VF.rnn_tanh, "lstm": _VF.lstm, "gru": _VF.gru}


class RNNStudentPreTrainedModel(PreTrainedModel):
    config_class = RNNStudentConfig
    base_model_prefix = "rnn_student"
    main_input_name = "input_ids"

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.RNNBase):  # torch's own default: U(-1/sqrt(H), 1/sqrt(H))
            bound = 1.0 / module.hidden_size**0.5
            for param in module.parameters():
                init.uniform_(param, -bound, bound)


class RNNStudentForSequenceClassification(RNNStudentPreTrainedModel):
    """A recurrent sequence classifier that loads, saves and runs in pipelines like any transformers model."""

    def __init__(self, config: RNNStudentConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.rnn = CELLS[config.cell](
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_layers,
            bidirectional=config.bidirectional,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        width = config.hidden_size * config.num_directions
        if config.classifier_hidden_size:
            self.pre_classifier = nn.Linear(width, config.classifier_hidden_size)
            width = config.classifier_hidden_size
        else:
            self.pre_classifier = None
        self.classifier = nn.Linear(width, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L) ids -> per-token states (B, L, dirs * H), the real-token mask (B, L), pooled (B, dirs * H)."""
        exporting = torch.onnx.is_in_onnx_export()  # the exporter cannot trace packing, nor a data-dependent if
        padded = exporting or not (attention_mask is None or bool(attention_mask.all()))
        if padded:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            ids, mask = left_align(input_ids, attention_mask)
            lengths = mask.sum(dim=1).clamp_min(1)  # an all-padding row still runs one (padding) step
            embedded = self.dropout(self.embeddings(ids))
            if exporting:
                states, final = self._unpacked(embedded, lengths)
            else:
                packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
                packed_out, final = self.rnn(packed)
                states, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=ids.shape[1])
            first = torch.arange(ids.shape[1], device=ids.device)[None, :] == 0
            mask = mask | (first & ~mask.any(dim=1, keepdim=True))  # that padding step is what an empty row pools
        else:
            # No padding (one text, or a batch of equal lengths): the same result without packing, which costs
            # more than the recurrence itself at batch 1, and without masking ops in the pooling.
            ids, mask = input_ids, torch.ones_like(input_ids, dtype=torch.bool)
            states, final = self.rnn(self.dropout(self.embeddings(ids)))
        pooling = self.config.pooling
        if pooling == "max":
            pooled = states.masked_fill(~mask[..., None], float("-inf")).amax(1) if padded else states.amax(dim=1)
        elif pooling == "mean":
            pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True) if padded else states.mean(dim=1)
        else:  # the final state of the top layer, each direction (the backward one has read the whole row)
            h_n = final[0] if isinstance(final, tuple) else final  # LSTM returns (h_n, c_n)
            top = h_n.view(self.config.num_layers, self.config.num_directions, ids.shape[0], -1)[-1]
            pooled = top.transpose(0, 1).reshape(ids.shape[0], -1)
        return states, mask, pooled

    def _unpacked(self, embedded: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Inference without packing, equal to the packed run at every real position (ONNX export path).

        embedded (B, L, E) right-padded, lengths (B,) -> states (B, L, dirs * H) and h_n (layers * dirs, B, H)
        as the packed run returns them (each direction's state after its last real token)."""
        config, rnn = self.config, self.rnn
        kernel = _KERNELS[config.cell]
        inputs, finals = embedded, []
        last = (lengths - 1)[:, None, None]
        for layer in range(config.num_layers):
            outputs = []
            for direction in range(config.num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                weights = [getattr(rnn, f"{name}{suffix}") for name in names]
                state = inputs.new_zeros(1, inputs.shape[0], config.hidden_size)
                hx = (state, state) if config.cell == "lstm" else state
                x = reverse_rows(inputs, lengths) if direction else inputs
                out = kernel(x, hx, weights, True, 1, 0.0, False, False, True)[0]
                if direction:  # back in reading order; its final state sits at position 0
                    out = reverse_rows(out, lengths)
                    finals.append(out[:, 0])
                else:  # the forward final state is the one after each row's last real token
                    finals.append(out.gather(1, last.expand(-1, 1, out.shape[-1])).squeeze(1))
                outputs.append(out)
            inputs = torch.cat(outputs, dim=-1)
        return inputs, torch.stack(finals)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput:
        """input_ids, attention_mask, token_type_ids (ignored): (B, L); labels: (B,) class ids (-100 = not
        labelled, e.g. augmented rows) or floats for regression, (B, C) for multi-label. Returns logits (B, C)."""
        if input_ids is None:
            raise ValueError("The RNN student needs input_ids (B, L) from the teacher's tokenizer.")
        states, _, pooled = self.encode(input_ids, attention_mask)
        hidden = self.dropout(pooled)
        if self.pre_classifier is not None:
            hidden = self.dropout(F.relu(self.pre_classifier(hidden)))
        logits = self.classifier(hidden)
        loss = None if labels is None else self.loss(logits, labels)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=(states,) if output_hidden_states else None
        )

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The loss transformers' BERT uses for the same ``problem_type`` (inferred the same way)."""
        config = self.config
        if config.problem_type is None:
            if self.num_labels == 1:
                config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                config.problem_type = "single_label_classification"
            else:
                config.problem_type = "multi_label_classification"
        if config.problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
        if config.problem_type == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        labels = labels.view(-1)
        if not labels.ne(-100).any():  # no labelled row in the batch (all augmented): nothing to learn, not NaN
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), labels, ignore_index=-100)
