"""Importance scores of weights and of structures (PLATON, Zhang et al. 2022).

Per weight: sensitivity ``I = |w * dL/dw|``, smoothed ``I_bar <- b1 * I_bar + (1 - b1) * I``, uncertainty
``U_bar <- b2 * U_bar + (1 - b2) * |I - I_bar|`` (with the updated ``I_bar``, as in PLATON's code), score
``I_bar * U_bar``. The score of a structure (a head, an FFN neuron, a hidden channel) is the sum of the scores
of the weights it owns.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.structure import ModelStructure


def platon_update(
    i_bar: Tensor, u_bar: Tensor, weight: Tensor, grad: Tensor | None, beta1: float, beta2: float
) -> tuple[Tensor, Tensor]:
    """One PLATON step for one tensor (pure): returns the new ``(I_bar, U_bar)``. ``grad=None`` counts as 0."""
    sensitivity = torch.zeros_like(weight) if grad is None else (weight * grad).abs()
    i_bar = beta1 * i_bar + (1 - beta1) * sensitivity
    u_bar = beta2 * u_bar + (1 - beta2) * (sensitivity - i_bar).abs()
    return i_bar, u_bar


class ImportanceScores:
    """Running per-weight importance for every trainable parameter of a model.

    kind: ``platon`` (I_bar * U_bar), ``taylor`` (I_bar) or ``magnitude`` (|w|, needs no gradients).
    """

    def __init__(self, model: nn.Module, kind: str, beta1: float, beta2: float) -> None:
        self.kind, self.beta1, self.beta2 = kind, beta1, beta2
        self.params: dict[str, nn.Parameter] = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self._name_of = {id(p): n for n, p in self.params.items()}
        needs_state = kind in ("platon", "taylor")
        self.i_bar = (
            {n: torch.zeros_like(p, dtype=torch.float32) for n, p in self.params.items()} if needs_state else {}
        )
        self.u_bar = (
            {n: torch.zeros_like(p, dtype=torch.float32) for n, p in self.params.items()} if kind == "platon" else {}
        )

    @property
    def needs_gradients(self) -> bool:
        return self.kind != "magnitude"

    @torch.no_grad()
    def update(self) -> None:
        """Fold in the current gradients (call after backward, before the optimizer step)."""
        if not self.needs_gradients:
            return
        for name, param in self.params.items():
            grad = None if param.grad is None else param.grad.float()
            i_bar, u_bar = platon_update(
                self.i_bar[name], self.u_bar.get(name, self.i_bar[name]), param.float(), grad, self.beta1, self.beta2
            )
            self.i_bar[name] = i_bar
            if self.kind == "platon":
                self.u_bar[name] = u_bar

    def of(self, module: nn.Module, param_name: str) -> Tensor | None:
        """The per-weight score of ``module.<param_name>`` (None when the module has no such parameter)."""
        param = getattr(module, param_name, None)
        if param is None or id(param) not in self._name_of:
            return None
        name = self._name_of[id(param)]
        if self.kind == "magnitude":
            return param.detach().float().abs()
        if self.kind == "taylor":
            return self.i_bar[name]
        return self.i_bar[name] * self.u_bar[name]

    def state_dict(self) -> dict[str, Tensor]:
        state = {f"i_bar.{n}": t for n, t in self.i_bar.items()}
        state.update({f"u_bar.{n}": t for n, t in self.u_bar.items()})
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for store, prefix in ((self.i_bar, "i_bar."), (self.u_bar, "u_bar.")):
            for name in store:
                key = prefix + name
                if key not in state:
                    raise KeyError(f"The saved pruning state has no {key}: it belongs to another model or settings.")
                store[name] = state[key].to(store[name].device, store[name].dtype)


def _sum_except(tensor: Tensor, dim: int) -> Tensor:
    dims = [d for d in range(tensor.dim()) if d != dim]
    return tensor.sum(dim=dims) if dims else tensor


@torch.no_grad()
def structure_scores(structure: ModelStructure, scores: ImportanceScores) -> dict[str, Tensor]:
    """Scores of every prunable structure: ``hidden`` (D,), ``heads`` (L, H), ``ffn`` (L, F)."""
    num_heads, head_dim = structure.num_heads, structure.head_dim
    hidden = torch.zeros(structure.hidden_size)

    def add_hidden(module: nn.Module, name: str, dim: int) -> None:
        nonlocal hidden
        score = scores.of(module, name)
        if score is not None:
            hidden = hidden + _sum_except(score, dim).cpu()

    for module in structure.reads_hidden:
        add_hidden(module, "weight", 1)
    for module in structure.writes_hidden:
        add_hidden(module, "weight", 0)
        add_hidden(module, "bias", 0)
    for table in structure.tables:
        add_hidden(table.module, table.name, table.dim)
    for norm in structure.norms:
        add_hidden(norm, "weight", 0)
        add_hidden(norm, "bias", 0)

    heads, ffn = [], []
    for parts in structure.layers:
        head = torch.zeros(num_heads)
        rows = num_heads * head_dim
        for proj, offset in parts.head_blocks():  # q, k, v (three blocks of one fused Linear in ModernBERT)
            head += scores.of(proj, "weight")[offset : offset + rows].reshape(num_heads, -1).sum(1).cpu()
            if (bias := scores.of(proj, "bias")) is not None:
                head += bias[offset : offset + rows].view(num_heads, head_dim).sum(1).cpu()
        head += scores.of(parts.attn_out, "weight").view(-1, num_heads, head_dim).sum((0, 2)).cpu()
        heads.append(head)
        neuron = scores.of(parts.ffn_out, "weight").sum(0).cpu()
        width = neuron.numel()
        for proj, offset in parts.ffn_blocks():  # [input | gate] halves of a gated FFN
            neuron += scores.of(proj, "weight")[offset : offset + width].sum(1).cpu()
            if (bias := scores.of(proj, "bias")) is not None:
                neuron += bias[offset : offset + width].cpu()
        ffn.append(neuron)
    return {"hidden": hidden, "heads": torch.stack(heads), "ffn": torch.stack(ffn)}
