"""How an export is checked: ONNX Runtime against the PyTorch model on seeded rows, judged for a quantized model
against its own int8 noise (measured without the graph, so a broken graph cannot excuse itself)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Verification bars. fp32 must match PyTorch to float tolerance. A quantized graph is judged against the model's own
# int8 noise (how far its quantized activations move it from the same weights in float): at most 1 % of rows may
# disagree where that noise cannot explain it (not a near tie), and ORT may stray from PyTorch by at most a few times
# that noise (a graph with a wrong scale or weight fails both).
FP32_MAX_DIFF = 1e-4
INT8_MAX_CLEAR_DISAGREEMENT = 0.01
INT8_MAX_NOISE_RATIO = 4.0
NUM_CHECK_SAMPLES = 128  # rows the export is checked on: one disagreement in 32 was 3 %, more than the bar


def verify(session, model: nn.Module, inputs: dict[str, Tensor], outputs: list[str],
           noise: float | None = None) -> dict[str, float]:  # fmt: skip
    """ONNX Runtime against the PyTorch model: max and median |diff|, argmax agreement, rows compared, near ties.

    A near tie is a disagreement where the PyTorch model's own margin between its choice and ORT's is within twice
    ``noise`` (the model's own int8 noise, `quantization_noise`), or, without one, twice the typical (median) row
    difference: the runtimes round differently and the model was undecided there. A broken graph cannot make its
    own disagreements near ties when the noise is measured without it.
    """
    with torch.inference_mode():
        reference = model(**inputs)
    accepted = {i.name for i in session.get_inputs()}  # the exporter drops inputs the model ignores
    feeds = {name: value.numpy() for name, value in inputs.items() if name in accepted}
    got = session.run(outputs, feeds)
    diff, agree, rows, ties, medians = 0.0, 0, 0, 0, []
    for name, ort_value in zip(outputs, got):
        ours, theirs = torch.from_numpy(ort_value).float(), reference[name].float()
        row_diff = (ours - theirs).abs().amax(-1)
        diff = max(diff, float(row_diff.max()))
        medians.append(float(row_diff.flatten().median()))
        picked = ours.argmax(-1)
        margin = theirs.amax(-1) - theirs.gather(-1, picked.unsqueeze(-1)).squeeze(-1)
        same, tie = picked == theirs.argmax(-1), margin <= 2 * (medians[-1] if noise is None else noise)
        if "attention_mask" in inputs and same.dim() == 2 and same.shape == inputs["attention_mask"].shape:
            real = inputs["attention_mask"].bool()  # token heads: compare real tokens only
            same, tie = same[real], tie[real]
        agree, rows, ties = agree + int(same.sum()), rows + same.numel(), ties + int((~same & tie).sum())
    return {"max_abs_diff": diff, "fidelity": agree / max(rows, 1), "num_samples": rows, "near_ties": ties,
            "median_abs_diff": max(medians, default=0.0)}  # fmt: skip


@torch.inference_mode()
def quantization_noise(
    model: nn.Module, float_model: nn.Module, inputs: dict[str, Tensor], outputs: list[str]
) -> float:
    """How far the quantized ``model`` is from its own weights computed in float (``float_model``, the export's
    stand-ins): the median over rows of a row's max |difference|, the largest over ``outputs``. It measures what
    activation quantization does to this model on these rows, without the ONNX graph."""
    ours, theirs = model(**inputs), float_model(**inputs)
    return max(
        float((ours[name].float() - theirs[name].float()).abs().amax(-1).flatten().median()) for name in outputs
    )


def passes(checked: dict, quantized: bool) -> bool:
    """Whether a `verify` result (with ``int8_noise`` for a quantized model) meets the bars above."""
    if not quantized:
        return checked["max_abs_diff"] <= FP32_MAX_DIFF
    rows = checked["num_samples"]
    clear = round((1 - checked["fidelity"]) * rows) - checked["near_ties"]
    close = checked["median_abs_diff"] <= INT8_MAX_NOISE_RATIO * (checked["int8_noise"] or 0.0) + FP32_MAX_DIFF
    return clear <= INT8_MAX_CLEAR_DISAGREEMENT * rows and close
