"""How an export is checked: ONNX Runtime against the PyTorch model on seeded rows, judged for a quantized model
against its own int8 noise (measured without the graph, so a broken graph cannot excuse itself)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Verification bars. fp32 must match PyTorch to float tolerance. A quantized graph is judged against the model's own
# int8 noise, row by row (how far its quantized activations move each row from the same weights in float): at most
# 1 % of rows may disagree where that noise cannot explain it (not a near tie), and at most 1 % may differ from
# PyTorch by more than a few times their noise (a wrong scale or weight, or a graph wrong on left-padded rows only,
# fails).
FP32_MAX_DIFF = 1e-4
INT8_MAX_CLEAR_DISAGREEMENT = 0.01
INT8_MAX_NOISE_RATIO = 4.0
NUM_CHECK_SAMPLES = 128  # rows the export is checked on: one disagreement in 32 was 3 %, more than the bar


def verify(session, model: nn.Module, inputs: dict[str, Tensor], outputs: list[str],
           noise: dict[str, Tensor] | None = None) -> dict[str, float]:  # fmt: skip
    """ONNX Runtime against the PyTorch model: max and median |diff|, argmax agreement, rows compared, near ties,
    and (with ``noise``) the rows that stray further than their own int8 noise allows.

    noise: ``{output: (rows,) the model's own int8 noise per row}`` (`quantization_noise`). A near tie is a
    disagreement where the PyTorch model's margin between its choice and ORT's is within twice the row's noise
    (at least the median row's), or, without noise, twice the typical (median) row difference: the runtimes round
    differently and the model was undecided there. A row strays when its |diff| exceeds `INT8_MAX_NOISE_RATIO`
    times that noise: a graph broken on some rows only (left padding, holes) strays there however small the median.
    """
    with torch.inference_mode():
        reference = model(**inputs)
    accepted = {i.name for i in session.get_inputs()}  # the exporter drops inputs the model ignores
    feeds = {name: value.numpy() for name, value in inputs.items() if name in accepted}
    got = session.run(outputs, feeds)
    diff, agree, rows, ties, far, medians = 0.0, 0, 0, 0, 0, []
    for name, ort_value in zip(outputs, got):
        ours, theirs = torch.from_numpy(ort_value).float(), reference[name].float()
        row_diff = (ours - theirs).abs().amax(-1)
        diff = max(diff, float(row_diff.max()))
        medians.append(float(row_diff.flatten().median()))
        scale = torch.full_like(row_diff, medians[-1]) if noise is None else _row_noise(noise[name], row_diff)
        picked = ours.argmax(-1)
        margin = theirs.amax(-1) - theirs.gather(-1, picked.unsqueeze(-1)).squeeze(-1)
        same, tie = picked == theirs.argmax(-1), margin <= 2 * scale
        strays = row_diff > INT8_MAX_NOISE_RATIO * scale + FP32_MAX_DIFF
        if "attention_mask" in inputs and same.dim() == 2 and same.shape == inputs["attention_mask"].shape:
            real = inputs["attention_mask"].bool()  # token heads: compare real tokens only
            same, tie, strays = same[real], tie[real], strays[real]
        agree, rows, ties = agree + int(same.sum()), rows + same.numel(), ties + int((~same & tie).sum())
        far += int(strays.sum())
    result = {"max_abs_diff": diff, "fidelity": agree / max(rows, 1), "num_samples": rows, "near_ties": ties,
              "median_abs_diff": max(medians, default=0.0)}  # fmt: skip
    if noise is not None:
        result["int8_noise"] = max(float(values.flatten().median()) for values in noise.values())
        result["rows_beyond_noise"] = far
    return result


def _row_noise(values: Tensor, like: Tensor) -> Tensor:
    """Each row's noise, at least the median row's (a row the quantization happened not to move still has the
    model's typical noise)."""
    values = values.reshape(like.shape).float()
    return values.clamp_min(float(values.flatten().median()))


@torch.inference_mode()
def quantization_noise(
    model: nn.Module, float_model: nn.Module, inputs: dict[str, Tensor], outputs: list[str]
) -> dict[str, Tensor]:
    """How far the quantized ``model`` is from its own weights computed in float (``float_model``, the export's
    stand-ins): each row's max |difference|, per output. It measures what activation quantization does to this
    model on these rows, without the ONNX graph."""
    ours, theirs = model(**inputs), float_model(**inputs)
    return {name: (ours[name].float() - theirs[name].float()).abs().amax(-1) for name in outputs}


def clear_disagreements(checked: dict) -> int:
    """Argmax disagreements that are not near ties."""
    return round((1 - checked["fidelity"]) * checked["num_samples"]) - checked["near_ties"]


def passes(checked: dict, quantized: bool) -> bool:
    """Whether a `verify` result meets the bars above (a quantized one needs ``verify``'s noise fields)."""
    if not quantized:
        return checked["max_abs_diff"] <= FP32_MAX_DIFF
    limit = INT8_MAX_CLEAR_DISAGREEMENT * checked["num_samples"]
    return clear_disagreements(checked) <= limit and checked.get("rows_beyond_noise", checked["num_samples"]) <= limit
