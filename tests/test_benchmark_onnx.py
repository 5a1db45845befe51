"""The ONNX benchmark's report and the Pareto plot's label placement, on made-up rows (no models)."""

import itertools

from benchmarks import onnx as onnx_bench
from benchmarks import report

PNG = b"\x89PNG\r\n\x1a\n"


def test_labels_never_overlap_each_other_or_a_marker():
    clustered = [(100 + 3 * (i % 4), 200 + 2 * (i // 4)) for i in range(16)] + [(400, 300), (401, 300)]
    size = (12.0, 9.0)
    offsets = report.place_labels(clustered, size)
    boxes = [(x + dx - 6, y + dy - 4.5, x + dx + 6, y + dy + 4.5) for (x, y), (dx, dy) in zip(clustered, offsets)]
    for a, b in itertools.combinations(boxes, 2):
        assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    for box, (x, y) in itertools.product(boxes, clustered):
        assert not (box[0] < x + 4 and x - 4 < box[2] and box[1] < y + 4 and y - 4 < box[3])


def test_frontier_keeps_only_points_nothing_beats():
    pairs = [(0.3, 0.79), (0.5, 0.78), (0.6, 0.81), (0.7, 0.83), (0.8, 0.82)]
    points = [{"latency": lat, "accuracy": acc} for lat, acc in pairs]
    assert [p["latency"] for p in report.frontier(points)] == [0.3, 0.6, 0.7]


def test_pareto_plot_marks_peers_and_the_teacher_once(tmp_path):
    rows = [("teacher", 0.83, 1.0), ("HomoDistil", 0.79, 0.3), ("torch.ao quantize_dynamic (peer)", 0.81, 0.65)]
    points = [{"suite": suite, "modality": "text", "model": m, "accuracy": a, "latency": lat, "size_mb": 10.0}
              for suite in ("prune", "quant") for m, a, lat in rows]  # fmt: skip
    assert [report.role(p) for p in points[:3]] == ["reference", "ours", "peer"]
    paths = report.plot(points, tmp_path)
    assert paths[0].name == "pareto.png" and paths[0].read_bytes().startswith(PNG)


def test_onnx_report_states_the_control_and_its_verdict():
    row = {"model": "ORT int8 HomoDistil (pruned + int8_dynamic)", "accuracy": 0.79, "lat_8x128": 0.18}
    result = {"rows": [row], "teacher_ms": {"8x128_ms": 900.0, "1x128_ms": 120.0}, "threads": 2,
              "homodistil": "cached", "teacher_trained": True,
              "control": {"8x128": 1.12, "1x128": 1.01, "8x128_reps": 60, "1x128_reps": 15}}  # fmt: skip
    text = onnx_bench.report(result)
    assert "ORT int8 HomoDistil" in text and "1.120 at 8x128" in text
    assert "Latency not trustworthy" in text
    result["control"]["8x128"] = 0.99
    assert "can be trusted" in onnx_bench.report(result)


def test_frontier_without_its_cached_model_says_which_command_makes_it(tmp_path, monkeypatch):
    import pytest

    monkeypatch.setattr(onnx_bench, "FRONTIER_CACHE", tmp_path / "missing")
    expected = r"No frontier model in .*missing: run `python -m benchmarks prune --frontier`"
    with pytest.raises(SystemExit, match=expected):
        onnx_bench._homodistil(None, None, None, quick=False, frontier=True)
