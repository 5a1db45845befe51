"""The benchmark plumbing on tiny models: measurements -> JSON -> Markdown report + PNG plots."""

import json

import torch
from conftest import bert_config, text_dataset
from transformers import BertForSequenceClassification

from benchmarks import common, quant, report
from hf_compress import QuantizationConfig, quantize


def test_quant_rows_report_and_plots(tmp_path):
    torch.manual_seed(0)
    fp32 = BertForSequenceClassification(bert_config(num_labels=3)).eval()
    int8 = quantize(BertForSequenceClassification(bert_config(num_labels=3)).eval(), QuantizationConfig())
    data = text_dataset(16, padded=False).with_format("torch")
    latency = common.latency_ratios(fp32, {"int8": int8}, reps=2, warmup=1)
    assert latency["__reference__"]["8x128"] == 1.0 and latency["int8"]["8x128"] > 0
    rows = []
    for name, model in (("fp32", fp32), ("int8", int8)):
        rows.append(dict(model=name, accuracy=common.evaluate_accuracy(model, data), acc_delta=0.0,
                         fidelity_mean=1.0, fidelity_min=1.0, size_mb=common.size_on_disk_mb(model), size_pct=100.0,
                         lat_8x128=latency.get(name, {"8x128": 1.0})["8x128"],
                         lat_1x128=latency.get(name, {"1x128": 1.0})["1x128"], reload="yes"))  # fmt: skip
    assert 0.0 <= rows[1]["accuracy"] <= 1.0 and rows[1]["size_mb"] < rows[0]["size_mb"]
    payload = {"rows": rows, "kernels": quant.kernel_ceiling(reps=1), "fp32_ms": latency["__reference__"]}
    results = tmp_path / "results" / "2026-01-01"
    results.mkdir(parents=True)
    (results / "quant.json").write_text(json.dumps(payload))
    json.loads((results / "quant.json").read_text())  # valid JSON

    text = report.build(results, tmp_path / "RESULTS.md")
    assert "| int8 |" in text and "python -m benchmarks quant" in text and "Int8 kernel ceiling" in text
    for png in ("pareto.png", "size.png"):
        assert (results / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![pareto]" in (tmp_path / "RESULTS.md").read_text()


def test_markdown_table_formats_numbers():
    table = common.markdown_table([{"a": "x", "b": 0.123456, "c": 1234.5}], [("a", "A"), ("b", "B"), ("c", "C")])
    assert table.splitlines()[2] == "| x | 0.123 | 1234.5 |"
