"""The auto benchmark's table: what the search chose against the targets (kept share of the teacher on test, speed
beside the hand-tuned frontier), and its place in RESULTS.md."""

import json

from benchmarks import auto, report


def _summary(test, speed_8, speed_1, drop="3%"):
    return {"metric": "accuracy", "teacher": {"accuracy_validation": 0.82, "accuracy_test": 0.80},
            "constraint": {"description": f"lose at most {drop} of the teacher", "max_drop": drop},
            "chosen": {"key": "L3-H256-A8-F1024/int8_dynamic/onnxruntime", "runtime": "onnxruntime",
                       "accuracy_validation": 0.80, "accuracy_test": test,
                       "speedup": {"8x128": speed_8, "1x128": speed_1}},
            "elapsed_s": 6000.0, "budget_s": 7200.0, "training_steps": 3000, "not_tried": ["screen L2-H128"],
            "noise": None}  # fmt: skip


def test_the_table_says_whether_each_search_met_its_target():
    table = auto.report({"runs": [_summary(0.78, 6.2, 5.1), _summary(0.77, 4.0, 3.0)]})
    met, missed = [line for line in table.splitlines() if line.startswith("| lose at most")]
    assert "| 97.5 |" in met and "met (>= 97 %); as fast as the frontier" in met
    assert "| 96.2 |" in missed and "NOT met (>= 97 %); slower than the frontier" in missed
    assert "not tried within the budget: screen L2-H128" in table


def test_the_auto_suite_has_its_section_in_results(tmp_path):
    day = tmp_path / "2026-12-02"
    day.mkdir()
    (day / "auto.json").write_text(json.dumps({"suite": "auto", "argv": ["--max-drop", "3%"],
                                               "runs": [_summary(0.78, 6.2, 5.1)]}))  # fmt: skip
    text = report.build(day, tmp_path / "RESULTS.md")
    assert "## auto\n\nCommand: `python -m benchmarks auto --max-drop 3%`" in text
    assert "L3-H256-A8-F1024/int8_dynamic/onnxruntime" in text
