"""``activation``: activation x weight, after Wanda (Sun et al. 2023, per weight ``|W_ij| * |X_j|_2``).

Per input column of the Linears that read a structure, ``|W[:, j]|_2 * |X_j|_2`` (the L2 norm of the column, where
summing Wanda's per-weight scores would give the L1 norm), ``X`` being the inputs of the student's training forward
passes since the last pruning event (collected by forward pre-hooks; evaluation passes are not counted). A head
scores the sum over its columns of the attention output projection, an FFN neuron its column of the FFN output
projection, a hidden channel the sum over every Linear that reads the residual stream. Under DDP the input norms are
summed over the ranks before ranking, so every rank keeps the same structures.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .base import EventScorer
from .registry import check_state, register_scorer


class ActivationScores(EventScorer):
    """``|W column|_2 * |input column|_2`` of the modules that read each structure (see the module docstring)."""

    name = "activation"

    def __init__(self, pruner) -> None:
        self.pruner = pruner
        s = pruner.structure
        self.reads = list(s.reads_hidden)
        modules = list(dict.fromkeys(self.reads + [p.attn_out for p in s.layers] + [p.ffn_out for p in s.layers]))
        names = {id(m): n for n, m in pruner.model.named_modules()}
        self.modules: dict[int, nn.Module] = {id(m): m for m in modules}
        self.names = {id(m): names.get(id(m), f"module{i}") for i, m in enumerate(modules)}
        self.squares: dict[int, Tensor] = {}  # per module: sum over tokens of x_j^2 since the last event
        self.handles = [m.register_forward_pre_hook(self._hook) for m in modules]

    def _hook(self, module: nn.Module, inputs) -> None:
        # evaluation passes are not the training stream; once the masks are final nothing is ranked any more
        if not module.training or self.pruner.finished:
            return
        x = inputs[0].detach().float()
        squares = x.pow(2).reshape(-1, x.shape[-1]).sum(0)
        key = id(module)
        self.squares[key] = self.squares[key] + squares if key in self.squares else squares

    @staticmethod
    def _world() -> int:
        """The number of processes that share this scorer's sums (1 outside a distributed run)."""
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    def _all_reduce(self) -> None:
        if self._world() < 2:
            return
        for key, module in self.modules.items():  # the same order on every rank
            total = self.squares.get(key)
            if total is None:
                total = torch.zeros(module.weight.shape[1], device=module.weight.device)
            dist.all_reduce(total)
            self.squares[key] = total

    def _columns(self, module: nn.Module) -> Tensor:
        return self.squares[id(module)].sqrt() * module.weight.detach().float().norm(dim=0)

    @torch.no_grad()
    def structure_scores(self, structure=None) -> dict[str, Tensor]:
        s = self.pruner.structure
        if not self.squares:
            raise RuntimeError(
                "The activation scorer saw no training forward pass before a pruning event: it ranks by the inputs "
                "of the training steps since the last event. Start pruning after step 0 (prune_start_step >= 1 for a "
                "one-shot schedule)."
            )
        self._all_reduce()
        hidden = sum(self._columns(m) for m in self.reads if id(m) in self.squares)
        heads = torch.stack([self._columns(p.attn_out).view(s.num_heads, s.head_dim).sum(1) for p in s.layers])
        ffn = torch.stack([self._columns(p.ffn_out) for p in s.layers])
        self.squares.clear()  # the next event ranks by the passes after this one
        return {"hidden": hidden.cpu(), "heads": heads.cpu(), "ffn": ffn.cpu()}

    def state_dict(self) -> dict[str, Tensor]:
        """The sums over every process since the last event (every rank must call it under DDP: it all-reduces a
        copy; the trainer does so before rank 0 writes the checkpoint)."""
        if self._world() < 2:
            return {f"squares.{self.names[key]}": total for key, total in self.squares.items()}
        local, self.squares = self.squares, {key: total.clone() for key, total in self.squares.items()}
        try:
            self._all_reduce()
            return {f"squares.{self.names[key]}": total for key, total in self.squares.items()}
        finally:
            self.squares = local

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        keys = {f"squares.{name}": key for key, name in self.names.items()}
        if not set(state) <= set(keys):  # a subset: only the modules seen since the last event are saved
            check_state(self.name, state, set(keys))
        self.squares.clear()
        for name, saved in state.items():
            module = self.modules[keys[name]]
            if saved.shape != (module.weight.shape[1],):
                raise ValueError(
                    f"Saved {name} has shape {tuple(saved.shape)}; {self.names[keys[name]]} reads "
                    f"{module.weight.shape[1]} features."
                )
            # the saved sums are every process's: each rank takes an equal share, so the next all-reduce adds to them
            self.squares[keys[name]] = saved.to(module.weight.device, torch.float32) / self._world()

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


register_scorer(
    "activation",
    lambda pruner, trainer: ActivationScores(pruner),
    help="activation x weight column norms of the training inputs (Wanda-style)",
)
