"""Importance scores of weights and of structures (PLATON, Zhang et al. 2022).

Per weight: sensitivity ``I = |w * dL/dw|``, smoothed ``I_bar <- b1 * I_bar + (1 - b1) * I``, uncertainty
``U_bar <- b2 * U_bar + (1 - b2) * |I - I_bar|`` (with the updated ``I_bar``, as in PLATON's code), score
``I_bar * U_bar``. The score of a structure (a head, an FFN neuron, a hidden channel) is the sum of the scores
of the weights it owns, each parameter counted once (a tied MLM decoder is the word-embedding table).

With ``window = ΔT > 1`` the sensitivity is first averaged over ΔT applied optimizer steps and the EMAs are
updated once per window with that average (PLATON's ``update_ipt_with_local_window``; its GLUE / SQuAD scripts
use ΔT = 10). Only finite gradients of steps the optimizer really applied are folded in (`update` returns
False for a step with an inf / NaN gradient), so one overflow can never turn the scores into NaN.

PLATON (``platon``) and its variant without the uncertainty (``taylor``, ``I_bar`` alone) are the scorers of
``scorers/platon.py`` and ``scorers/taylor.py``; `structure_scores` also sums the per-weight ``|w|`` of
``scorers/magnitude.py``.

Two granularities. ``weight`` (PLATON's unstructured form): EMAs per weight, a structure's score is the sum of its
weights' ``I_bar * U_bar``. ``structure`` (`StructureImportance`, HomoDistil's column score
``|Θ_j^T ∇_{Θ_j} L|``): each step, the *signed* products ``w * dL/dw`` of a structure's weights are summed
first, which is the first-order change of the loss when the whole structure is removed, and the EMAs run on
the absolute value of that sum. Per-weight noise of either sign cancels in the sum instead of adding up.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from ..models.structure import ModelStructure


class WeightScores(Protocol):
    """Per-weight scores that `structure_scores` sums per structure."""

    def of(self, module: nn.Module, param_name: str) -> Tensor | None:
        """The score of each weight of ``module.<param_name>`` (its shape), or None when it is not scored."""
        ...


def platon_update(
    i_bar: Tensor, u_bar: Tensor, weight: Tensor, grad: Tensor | None, beta1: float, beta2: float
) -> tuple[Tensor, Tensor]:
    """One PLATON step for one tensor (pure): returns the new ``(I_bar, U_bar)``. ``grad=None`` counts as 0."""
    sensitivity = torch.zeros_like(weight) if grad is None else (weight * grad).abs()
    return platon_fold(i_bar, u_bar, sensitivity, beta1, beta2)


def platon_fold(
    i_bar: Tensor, u_bar: Tensor | None, sensitivity: Tensor, beta1: float, beta2: float
) -> tuple[Tensor, Tensor | None]:
    """The EMAs of one PLATON step with an already computed sensitivity (pure); ``u_bar=None`` (no uncertainty,
    ``taylor``) stays None. The uncertainty uses the updated ``I_bar``, as in PLATON's code."""
    i_bar = beta1 * i_bar + (1 - beta1) * sensitivity
    if u_bar is not None:
        u_bar = beta2 * u_bar + (1 - beta2) * (sensitivity - i_bar).abs()
    return i_bar, u_bar


class _SmoothedSensitivity:
    """PLATON's smoothing, shared by both granularities: per key (a parameter or a structure kind) a sensitivity
    tensor is averaged over the ΔT window, then folded into ``I_bar`` and (``platon``) ``U_bar``. Subclasses give
    the trainable parameters, the keys' tensors and how one step's sensitivity is computed."""

    def __init__(
        self, kind: str, beta1: float, beta2: float, window: int, params: dict, like: dict[str, Tensor]
    ) -> None:
        """``like``: per key, a tensor with the shape and device of its sensitivity (a parameter, or a structure
        vector on the CPU)."""
        if kind not in ("platon", "taylor"):
            raise ValueError(
                f"PLATON-style scores are 'platon' (with uncertainty) or 'taylor' (without), got {kind!r}; other "
                "criteria are scorers of their own (hf_compress.prune.scorers)."
            )
        if window < 1:
            raise ValueError(f"The importance window must be >= 1 step, got {window}.")
        self.kind, self.beta1, self.beta2, self.window = kind, beta1, beta2, window
        self.params = params
        zeros = {k: torch.zeros_like(t, dtype=torch.float32) for k, t in like.items()}
        self.i_bar = zeros
        self.u_bar = {k: v.clone() for k, v in zeros.items()} if kind == "platon" else {}
        # Sum of the sensitivities of the current ΔT window (only kept when window > 1), and its length so far.
        self.window_sum = {k: v.clone() for k, v in zeros.items()} if window > 1 else {}
        self.window_steps = 0
        self.skipped_steps = 0  # updates refused for a non-finite gradient
        self.first_signal: float | None = None  # `signal` of the first scored step (the student as it started)

    def _sensitivity(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def _relative(self, sensitivities: dict[str, Tensor]) -> float:
        raise NotImplementedError

    @torch.no_grad()
    def update(self) -> bool:
        """Fold in the current gradients (call once per applied optimizer step, gradients still in place).

        Returns False, and changes nothing, when a gradient holds inf / NaN (an fp16 overflow step).
        """
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        if grads and not bool(torch.stack([g.isfinite().all() for g in grads]).all()):
            self.skipped_steps += 1
            return False
        sensitivity = self._sensitivity()
        if self.window > 1:
            for key, value in sensitivity.items():
                self.window_sum[key] += value
            self.window_steps += 1
            if self.window_steps < self.window:
                return True
            sensitivity = {k: total / self.window_steps for k, total in self.window_sum.items()}
            for total in self.window_sum.values():
                total.zero_()
            self.window_steps = 0
        if self.first_signal is None:
            self.first_signal = self._relative(sensitivity)
        for key, value in sensitivity.items():
            self.i_bar[key], u_bar = platon_fold(self.i_bar[key], self.u_bar.get(key), value, self.beta1, self.beta2)
            if u_bar is not None:
                self.u_bar[key] = u_bar
        return True

    @torch.no_grad()
    def signal(self) -> float | None:
        """The smoothed sensitivity relative to the weights, ``sum(I_bar) / sum(|w|)``: an importance-weighted mean
        |grad|. ~0 means the scores are float noise."""
        return self._relative(self.i_bar)

    def _weight_total(self) -> float:
        return sum(float(p.detach().abs().sum()) for p in self.params.values())

    def state_dict(self) -> dict[str, Tensor]:
        state = {f"i_bar.{k}": t for k, t in self.i_bar.items()}
        state.update({f"u_bar.{k}": t for k, t in self.u_bar.items()})
        state.update({f"window_sum.{k}": t for k, t in self.window_sum.items()})
        if self.window_sum:
            state["window_steps"] = torch.tensor(self.window_steps)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for store, prefix in ((self.i_bar, "i_bar."), (self.u_bar, "u_bar."), (self.window_sum, "window_sum.")):
            for key in store:
                if prefix + key not in state:
                    raise KeyError(
                        f"The saved pruning state has no {prefix + key}: it belongs to another model or settings "
                        "(importance, importance_granularity, importance_window)."
                    )
                saved = state[prefix + key]
                if saved.shape != store[key].shape:
                    raise ValueError(
                        f"Saved {prefix + key} has shape {tuple(saved.shape)}, this model's {tuple(store[key].shape)}."
                    )
                store[key] = saved.to(store[key].device, store[key].dtype)
        if self.window_sum:
            self.window_steps = int(state.get("window_steps", 0))


class ImportanceScores(_SmoothedSensitivity):
    """Running per-weight importance for every trainable parameter of a model.

    kind: ``platon`` (I_bar * U_bar) or ``taylor`` (I_bar).
    """

    def __init__(self, model: nn.Module, kind: str, beta1: float, beta2: float, window: int = 1) -> None:
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        super().__init__(kind, beta1, beta2, window, params, {n: p.detach() for n, p in params.items()})
        self._name_of = {id(p): n for n, p in self.params.items()}

    def _sensitivity(self) -> dict[str, Tensor]:
        return {
            n: torch.zeros_like(p, dtype=torch.float32) if p.grad is None else (p.float() * p.grad.float()).abs()
            for n, p in self.params.items()
        }

    def _relative(self, sensitivities: dict[str, Tensor]) -> float:
        total = sum(float(t.sum()) for t in sensitivities.values())
        return total / max(self._weight_total(), 1e-30)

    def structure_scores(self, structure: ModelStructure) -> dict[str, Tensor]:
        """Scores of every prunable structure (see `structure_scores`)."""
        return structure_scores(structure, self)

    def of(self, module: nn.Module, param_name: str) -> Tensor | None:
        """The per-weight score of ``module.<param_name>`` (None when the module has no such parameter)."""
        param = getattr(module, param_name, None)
        if param is None or id(param) not in self._name_of:
            return None
        name = self._name_of[id(param)]
        if self.kind == "taylor":
            return self.i_bar[name]
        return self.i_bar[name] * self.u_bar[name]


def _sum_except(tensor: Tensor, dim: int) -> Tensor:
    dims = [d for d in range(tensor.dim()) if d != dim]
    return tensor.sum(dim=dims) if dims else tensor


@torch.no_grad()
def structure_scores(structure: ModelStructure, scores: WeightScores) -> dict[str, Tensor]:
    """Scores of every prunable structure: ``hidden`` (D,), ``heads`` (L, H), ``ffn`` (L, F), each the sum of the
    per-weight scores ``scores.of(module, name)`` of the weights it owns."""
    num_heads, head_dim = structure.num_heads, structure.head_dim
    hidden = torch.zeros(structure.hidden_size)
    # A tied parameter (MLM decoder = word embeddings) counts once; one read along another dim (a pooler reads
    # and writes the hidden size) is another slice of the channel and counts too.
    counted: set[tuple[int, int]] = set()

    def add_hidden(module: nn.Module, name: str, dim: int) -> None:
        nonlocal hidden
        param = getattr(module, name, None)
        score = scores.of(module, name)
        if score is None or (id(param), dim) in counted:
            return
        counted.add((id(param), dim))
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


class _SignedSensitivity:
    """``of(module, name)`` = the signed ``w * dL/dw`` of that parameter (0 without a gradient), so that
    `structure_scores` sums a structure's first-order Taylor terms with their signs."""

    def __init__(self, params: dict[int, nn.Parameter]) -> None:
        self.params = params

    def of(self, module: nn.Module, param_name: str) -> Tensor | None:
        param = getattr(module, param_name, None)
        if param is None or id(param) not in self.params:
            return None
        if param.grad is None:
            return torch.zeros_like(param, dtype=torch.float32)
        return param.detach().float() * param.grad.float()


class StructureImportance(_SmoothedSensitivity):
    """PLATON's smoothed sensitivity and uncertainty, per structure (``granularity="structure"``).

    Sensitivity of a structure at one step: ``|sum over its weights of w * dL/dw|`` (HomoDistil's column score,
    Molchanov et al.'s group Taylor term): the first-order loss change of removing it. ``I_bar``, ``U_bar`` and
    the ΔT window work as in `ImportanceScores`, on the structure vectors ``hidden`` (D,), ``heads`` (L, H) and
    ``ffn`` (L, F). Same interface as `ImportanceScores` for the pruner.
    """

    def __init__(
        self, model: nn.Module, structure: ModelStructure, kind: str, beta1: float, beta2: float, window: int = 1
    ) -> None:
        if kind not in ("platon", "taylor"):
            raise ValueError(
                f"Structure-level importance needs gradients ('platon' or 'taylor'), got {kind!r}; 'magnitude' is "
                "a per-weight score (importance_granularity='weight')."
            )
        self.structure = structure
        params = {id(p): p for p in model.parameters() if p.requires_grad}
        super().__init__(kind, beta1, beta2, window, params, structure_scores(structure, _SignedSensitivity(params)))

    def _sensitivity(self) -> dict[str, Tensor]:
        return {k: v.abs() for k, v in structure_scores(self.structure, _SignedSensitivity(self.params)).items()}

    def _relative(self, sensitivities: dict[str, Tensor]) -> float:
        # Hidden channels are scored over every weight that reads or writes them: their sum counts each weight once.
        return float(sensitivities["hidden"].sum()) / max(self._weight_total(), 1e-30)

    def structure_scores(self, structure: ModelStructure | None = None) -> dict[str, Tensor]:
        """``I_bar * U_bar`` (platon) or ``I_bar`` (taylor) of every structure."""
        if self.kind == "taylor":
            return {k: v.clone() for k, v in self.i_bar.items()}
        return {k: self.i_bar[k] * self.u_bar[k] for k in self.i_bar}
