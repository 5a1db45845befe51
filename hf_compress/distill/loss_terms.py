"""Each distillation loss term logged on its own: its mean since the last training log, and over an evaluation."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

LOSS_TERMS = ("kd_loss", "hard_label_loss", "hidden_loss", "attention_loss", "embedding_loss", "pooled_loss")


class LossTermLogging:
    """A `Trainer` mixin: ``compute_loss`` calls ``_record(mode, terms)``; training logs and evaluation metrics get
    the mean of each term with a weight > 0 (``args.<term>_weight``), averaged across processes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._term_sums: dict[str, Tensor] = {}
        self._term_counts: dict[str, int] = {}
        super().__init__(*args, **kwargs)

    def evaluation_loop(self, *args: Any, **kwargs: Any):
        self._reset_terms("eval")
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        output.metrics.update({f"{prefix}_{k}": v for k, v in self._reduce_terms("eval").items()})
        return output

    def _record(self, mode: str, terms: dict[str, Tensor]) -> None:
        values = torch.stack([terms[n].detach().float() if n in terms else torch.tensor(0.0) for n in LOSS_TERMS])
        values = values.to(self.args.device)
        self._term_sums[mode] = self._term_sums.get(mode, torch.zeros_like(values)) + values
        self._term_counts[mode] = self._term_counts.get(mode, 0) + 1

    def _reset_terms(self, mode: str) -> None:
        self._term_sums.pop(mode, None)
        self._term_counts.pop(mode, None)

    def _reduce_terms(self, mode: str) -> dict[str, float]:
        if mode not in self._term_sums:
            return {}
        means = self._term_sums[mode] / self._term_counts[mode]
        if self.accelerator.num_processes > 1:
            means = self.accelerator.reduce(means, reduction="mean")
        self._reset_terms(mode)
        weights = [getattr(self.args, n.replace("_loss", "_weight")) for n in LOSS_TERMS]
        return {n: round(v, 6) for n, v, w in zip(LOSS_TERMS, means.tolist(), weights) if w > 0}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the mean of each term since the last one
            logs = {**logs, **self._reduce_terms("train")}
        super().log(logs, start_time)
