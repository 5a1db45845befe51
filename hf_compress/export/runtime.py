"""An exported model on ONNX Runtime, called like a transformers model (``model(**tensors).logits``), so the same
measurements (latency interleaved with the torch teacher, accuracy over a dataset) apply to torch and ORT."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from .onnx import require_onnx


class OrtModel:
    """An ONNX Runtime CPU session over ``path`` (a ``model.onnx`` with a ``logits`` output)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        require_onnx()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # ORT's idle threads spin by default and steal the cores from the torch model timed next in the same
        # interleaved round (the control then drifts off 1.00x); torch's own pool does not hold them that way.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.path = Path(path)

    def eval(self):
        return self

    def __call__(self, **tensors):
        feeds = {}
        for name in self.inputs:
            value = tensors.get(name)
            feeds[name] = (torch.zeros_like(tensors["input_ids"]) if value is None else value).numpy()
        (logits,) = self.session.run(["logits"], feeds)
        return SimpleNamespace(logits=torch.from_numpy(logits))
