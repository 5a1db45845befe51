"""Structure masks, how they are chosen from scores, and how they act in the forward pass.

A masked model computes exactly what the sliced (physically smaller) model computes: pruned heads and FFN
neurons contribute nothing, pruned hidden channels are zero everywhere in the residual stream, and every
LayerNorm over the hidden dimension takes its mean and variance over the kept channels only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..models.structure import ModelStructure


@dataclass
class StructureMasks:
    """1.0 = kept, 0.0 = pruned. hidden: (D,); heads: (L, H); ffn: (L, F); layers: (L,) whole layers (depth
    pruning: a dropped layer passes its input through unchanged). Heads / FFN counts are those of kept layers."""

    hidden: Tensor
    heads: Tensor
    ffn: Tensor
    layers: Tensor | None = None

    def __post_init__(self) -> None:
        if self.layers is None:
            self.layers = torch.ones(self.heads.shape[0])

    @classmethod
    def full(cls, structure: ModelStructure) -> StructureMasks:
        num_layers = len(structure.layers)
        return cls(
            hidden=torch.ones(structure.hidden_size),
            heads=torch.ones(num_layers, structure.num_heads),
            ffn=torch.ones(num_layers, structure.intermediate_size),
        )

    def counts(self) -> dict[str, int]:
        """Kept structures: hidden channels, heads per layer, FFN neurons per layer (layer 0's; all equal), layers."""
        return {
            "hidden": int(self.hidden.sum()),
            "heads": int(self.heads[0].sum()),
            "ffn": int(self.ffn[0].sum()),
            "layers": int(self.layers.sum()),
        }

    def state_dict(self) -> dict[str, Tensor]:
        return {"hidden": self.hidden, "heads": self.heads, "ffn": self.ffn, "layers": self.layers}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name in ("hidden", "heads", "ffn", "layers"):
            if name == "layers" and name not in state:  # saved before depth pruning existed: every layer kept
                continue
            saved = state[name]
            current = getattr(self, name)
            if saved.shape != current.shape:
                raise ValueError(
                    f"Saved {name} mask has shape {tuple(saved.shape)}, the model {tuple(current.shape)}."
                )
            current.copy_(saved)  # in place: the forward hooks hold these tensors


def keep_top(scores: Tensor, mask: Tensor, keep: int) -> Tensor:
    """New mask keeping the ``keep`` highest-scoring entries among those ``mask`` still keeps (last dim).

    Pruning is monotone: a pruned structure never comes back. scores, mask: (..., N); returns (..., N).
    A NaN score ranks below every finite score (``topk`` alone would rank NaN first), but above pruned entries.
    """
    kept_now = int(mask.sum(-1).max())
    if keep > kept_now:
        raise ValueError(f"Cannot keep {keep} structures when only {kept_now} are left.")
    lowest = torch.finfo(torch.float32).min
    masked_scores = scores.float().nan_to_num(nan=lowest, neginf=lowest).masked_fill(mask == 0, float("-inf"))
    index = masked_scores.topk(keep, dim=-1).indices
    return torch.zeros_like(mask).scatter_(-1, index, 1.0)


def kept_indices(mask: Tensor) -> Tensor:
    """Sorted indices of the kept entries of a 1-D mask."""
    return mask.nonzero().squeeze(1)


class MaskHooks:
    """Forward hooks that make a model compute as if its masked structures were removed."""

    def __init__(
        self,
        structure: ModelStructure,
        masks: StructureMasks,
        *,
        hidden: bool,
        heads: bool,
        ffn: bool,
        layer_modules: list[nn.Module] | None = None,
    ):
        """``layer_modules``: the encoder layers, given when whole layers may be dropped (``masks.layers``)."""
        self.handles: list[RemovableHandle] = []
        for index, layer in enumerate(layer_modules or []):
            self.handles.append(layer.register_forward_hook(_skip_layer(masks.layers, index), with_kwargs=True))
        head_dim = structure.head_dim
        if hidden:
            for module in structure.stream_sources:
                self.handles.append(module.register_forward_hook(_mask_output(masks.hidden)))
            for norm in structure.norms:
                self.handles.append(norm.register_forward_hook(_masked_layer_norm(masks.hidden)))
        for index, parts in enumerate(structure.layers):
            if heads:
                self.handles.append(
                    parts.attn_out.register_forward_pre_hook(_mask_heads(masks.heads, index, head_dim))
                )
            if ffn:
                self.handles.append(parts.ffn_out.register_forward_pre_hook(_mask_input(masks.ffn, index)))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _skip_layer(layers: Tensor, index: int):
    """A dropped layer returns its input: the residual stream passes through as if the layer were removed."""

    def hook(module: nn.Module, args, kwargs, output):
        if bool(layers[index]):
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    return hook


def _mask_output(mask: Tensor):
    def hook(module: nn.Module, inputs, output):
        if isinstance(output, tuple):
            return (output[0] * mask.to(output[0]), *output[1:])
        return output * mask.to(output)

    return hook


def _masked_layer_norm(mask: Tensor):
    def hook(module: nn.LayerNorm, inputs, output):
        x = inputs[0]
        m = mask.to(x)
        count = m.sum()
        mean = (x * m).sum(-1, keepdim=True) / count
        centered = (x - mean) * m
        var = centered.pow(2).sum(-1, keepdim=True) / count
        normed = centered * torch.rsqrt(var + module.eps)
        if module.weight is not None:
            normed = normed * module.weight
        if module.bias is not None:
            normed = normed + module.bias
        return normed * m

    return hook


def _mask_heads(head_masks: Tensor, layer: int, head_dim: int):
    def hook(module: nn.Module, inputs):
        x = inputs[0]
        return (x * head_masks[layer].repeat_interleave(head_dim).to(x), *inputs[1:])

    return hook


def _mask_input(masks: Tensor, layer: int):
    def hook(module: nn.Module, inputs):
        x = inputs[0]
        return (x * masks[layer].to(x), *inputs[1:])

    return hook
