"""The ONNX section of an export folder's README: the file, its inputs, how it was checked, how to run it."""

from __future__ import annotations

from pathlib import Path

REPORT_NAME = "onnx_export.json"


def card_section(report) -> str:
    """The README section describing the ONNX file, its inputs and its measured agreement with PyTorch."""
    feeds = ", ".join(f'"{n}": ...' for n in report.inputs)
    count = len(report.quantized_layers)
    layers = f" ({count} int8/int4 layers as in the PyTorch checkpoint)" if count else ""
    if report.fused_ops:
        layers += ", fused by ONNX Runtime's transformer optimizer (" + ", ".join(
            f"{count} {name}" for name, count in report.fused_ops.items()) + ")"  # fmt: skip
    embedder = ""
    if report.pooling is not None:
        embedder = (f"\nAn embedder: `sentence_embedding` is the token states' {report.pooling} (as the model's "
                    f"sentence-transformers pipeline), smallest cosine to PyTorch's {report.min_cosine:.6f}; "
                    "`token_embeddings` are the token states.")  # fmt: skip
    return f"""
## ONNX

`{Path(report.onnx_path).name}`: {report.precision}{layers}, opset {report.opset}, dynamic batch and sequence
length, {report.onnx_mb:.1f} MB. Checked on ONNX Runtime against the PyTorch model on {report.num_samples} sample
rows: max |diff| {report.max_abs_diff:.2e}, argmax agreement {report.fidelity:.4f}, {report.near_ties} near ties
(details in `{REPORT_NAME}`).{embedder}

```python
import onnxruntime as ort
session = ort.InferenceSession("{Path(report.onnx_path).name}")
{", ".join(report.outputs)}, = session.run({report.outputs!r}, {{{feeds}}})  # numpy arrays
```
"""  # noqa: E501


def write_readme(source: Path | None, output_dir: Path, report) -> None:
    """The export folder's README: the source folder's card (without an older ONNX section) + `card_section`."""
    base = source / "README.md" if source is not None else None
    text = base.read_text() if base is not None and base.is_file() else "# ONNX export (hf_compress)\n"
    marker = "\n## ONNX\n"
    text = text.split(marker)[0].rstrip("\n") + "\n"
    (output_dir / "README.md").write_text(text + card_section(report))
