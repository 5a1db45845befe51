"""The ONNX section of an export folder's README: the file, its inputs, how it was checked, how to run it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

REPORT_NAME = "onnx_export.json"
# optimum's ONNX Runtime class for each head (it loads an export folder as it is: model.onnx + config.json)
OPTIMUM_CLASSES = {
    "ForSequenceClassification": "ORTModelForSequenceClassification",
    "ForTokenClassification": "ORTModelForTokenClassification",
    "ForQuestionAnswering": "ORTModelForQuestionAnswering",
    "ForImageClassification": "ORTModelForImageClassification",
}


def optimum_class(architectures: list[str]) -> str | None:
    """optimum's ``ORTModelFor...`` class for a config's ``architectures`` (None for an embedder or an RNN)."""
    name = architectures[0] if architectures else ""
    if name.startswith("RNNStudent"):
        return None
    return next((cls for suffix, cls in OPTIMUM_CLASSES.items() if name.endswith(suffix)), None)


def card_section(report, architectures: list[str] = ()) -> str:
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
{_optimum_snippet(optimum_class(list(architectures)))}"""  # noqa: E501


def _optimum_snippet(cls: str | None) -> str:
    if cls is None:
        return ""
    return f"""
With optimum (in an environment of its own while it pins transformers < 4.58), from this folder:

```python
from optimum.onnxruntime import {cls}
model = {cls}.from_pretrained("path/to/this/folder")
```
"""


def with_onnx_tag(text: str) -> str:
    """The card with ``onnx`` among its front-matter tags (front matter added when it has none)."""
    meta, body = {}, text
    if text.startswith("---\n") and "\n---\n" in text[4:]:
        head, body = text[4:].split("\n---\n", 1)
        meta = yaml.safe_load(head) or {}
    tags = [t for t in meta.get("tags") or [] if t != "onnx"] + ["onnx"]
    meta["tags"] = tags
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + body.lstrip("\n")


def write_readme(source: Path | None, output_dir: Path, report) -> None:
    """The export folder's README: the source folder's card (without an older ONNX section) + `card_section`."""
    base = source / "README.md" if source is not None else None
    text = base.read_text() if base is not None and base.is_file() else "# ONNX export (hf_compress)\n"
    marker = "\n## ONNX\n"
    text = text.split(marker)[0].rstrip("\n") + "\n"
    config = output_dir / "config.json"
    architectures = json.loads(config.read_text()).get("architectures") or [] if config.is_file() else []
    (output_dir / "README.md").write_text(with_onnx_tag(text) + card_section(report, architectures))
