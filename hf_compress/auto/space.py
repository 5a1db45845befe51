"""The search space: encoder shapes (depth x heads; the residual width and FFN follow the teacher's head size and
FFN ratio) and, for each trained shape, the quantization methods and runtimes it may be deployed with."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..models.structure import model_structure
from ..prune.masks import StructureMasks
from ..prune.slicing import slice_model
from .config import SearchConfig

# How an onnxruntime candidate is exported: int8_dynamic activations with ORT's fused 8-bit DynamicQuantizeLinear
# (faster on ORT than torch's 7-bit range; the export check judges it against the model's own int8 noise, and the
# search measures the exported model's accuracy itself).
ORT_EXPORT = {"dynamic_activations": "ort"}


def export_for_ort(model_or_dir, folder: Path, processor=None):
    """(an `OrtModel` over ``model_or_dir`` exported to ``folder`` as a candidate is deployed, the export's
    report); whatever ``folder`` held before is replaced."""
    from ..export import export_onnx
    from ..export.runtime import OrtModel

    if folder.exists():
        shutil.rmtree(folder)
    report = export_onnx(model_or_dir, folder, processor=processor, **ORT_EXPORT)
    return OrtModel(folder / "model.onnx"), report


@dataclass(frozen=True, order=True)
class Shape:
    """An encoder shape HomoDistil can prune the teacher to (every layer keeps the same heads and FFN)."""

    layers: int
    heads: int
    hidden: int
    ffn: int

    @property
    def key(self) -> str:
        return f"L{self.layers}-H{self.hidden}-A{self.heads}-F{self.ffn}"

    def targets(self) -> dict[str, int]:
        """The homodistil stage fields that prune to this shape."""
        return {"target_num_layers": self.layers, "target_hidden_size": self.hidden,
                "target_num_heads": self.heads, "target_intermediate_size": self.ffn}  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """A deployable model: a shape, its quantization (``none`` = fp32) and the runtime it runs on."""

    shape: Shape
    quant: str
    runtime: str

    @property
    def key(self) -> str:
        return f"{self.shape.key}/{self.quant}/{self.runtime}"

    def as_dict(self) -> dict:
        return {**asdict(self.shape), "quant": self.quant, "runtime": self.runtime, "key": self.key}


def teacher_shape(teacher) -> Shape:
    structure = model_structure(teacher)
    return Shape(len(structure.layers), structure.num_heads, structure.hidden_size, structure.intermediate_size)


def _default_depths(layers: int) -> list[int]:
    return sorted({d for d in (2, 3, 4, layers // 2, (2 * layers) // 3, layers) if 1 <= d <= layers})


def _default_heads(heads: int) -> list[int]:
    return sorted({h for h in (heads // 3, heads // 2, (2 * heads) // 3, heads) if h >= 1})


def shapes(teacher, config: SearchConfig) -> list[Shape]:
    """Every shape searched: the teacher's own (the quantization-only subspace) when ``quantize`` is a method,
    and, with ``homodistil``, depths x heads smaller than the teacher. A depth or head count above the teacher's
    is a ValueError."""
    full = teacher_shape(teacher)
    found = []
    if "quantize" in config.methods:
        found.append(full)
    if "homodistil" in config.methods:
        depths = config.depths or _default_depths(full.layers)
        heads = config.heads or _default_heads(full.heads)
        if max(depths) > full.layers or max(heads) > full.heads:
            raise ValueError(f"depths {depths} / heads {heads} exceed the teacher's {full.layers} layers / "
                             f"{full.heads} heads: a pruned student is never larger than its teacher.")  # fmt: skip
        head_dim = full.hidden // full.heads
        for depth in depths:
            for count in heads:
                hidden = count * head_dim
                shape = Shape(depth, count, hidden, full.ffn * hidden // full.hidden)
                if shape != full:
                    found.append(shape)
    return found


def candidates(shape_list: list[Shape], config: SearchConfig) -> list[Candidate]:
    return [Candidate(s, q, r) for s in shape_list for q in config.quant_methods for r in config.runtimes]


def build_untrained(teacher, shape: Shape):
    """The teacher cut to ``shape`` without training (its first heads, FFN neurons and hidden channels, layers
    spread over its depth): the class and config HomoDistil would save, with a real model's output margins, so
    that an int8 export's check (and so ORT's fusions) behaves as on a trained candidate. For timing only."""
    full = teacher_shape(teacher)
    keep = torch.zeros(full.layers)
    keep[torch.linspace(0, full.layers - 1, shape.layers).round().long()] = 1.0
    masks = StructureMasks(
        hidden=(torch.arange(full.hidden) < shape.hidden).float(),
        heads=(torch.arange(full.heads) < shape.heads).float().repeat(full.layers, 1),
        ffn=(torch.arange(full.ffn) < shape.ffn).float().repeat(full.layers, 1),
        layers=keep,
    )
    return slice_model(teacher, masks).eval()
