"""The recipe suite runs a recipe through the product's runner at several seeds, stores the runner's summary rows
as they are (with the summary schema), and renders them as the headline table."""

import json

import yaml
from tiny_assets import DISTILL, FINETUNE, make_assets, tiny_recipe

from benchmarks import common
from benchmarks import recipes as suite
from hf_compress.evaluation import format_speedup
from hf_compress.runner.summary import SUMMARY_SCHEMA


def test_a_recipe_runs_at_two_seeds_and_its_rows_become_the_headline(tmp_path, monkeypatch):
    assets = make_assets(tmp_path / "assets")
    folder = tmp_path / "recipes"
    folder.mkdir()
    raw = tiny_recipe(assets, dict(FINETUNE), dict(DISTILL), {"name": "int8", "method": "quantize"})
    (folder / "tiny.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(suite, "RECIPES", folder)
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    payload = suite.run(["tiny"], [0, 1], quick=True, out=tmp_path / "out")
    assert payload["schema"] == SUMMARY_SCHEMA and [r["seed"] for r in payload["runs"]] == [0, 1]
    for run in payload["runs"]:  # the runner's own summary rows, as they are
        summary = json.loads((tmp_path / "out" / f"tiny-seed{run['seed']}" / "summary.json").read_text())
        assert summary["schema"] == SUMMARY_SCHEMA and run["stages"] == summary["stages"]
    stored = json.loads(next((tmp_path / "results").glob("*/recipes-quick.json")).read_text())
    assert stored["runs"] == payload["runs"]  # written as the runs came
    again = suite.run(["tiny"], [1], quick=True, out=tmp_path / "out2")  # later today: merged, seed 1 replaced
    assert [r["seed"] for r in again["runs"]] == [0, 1] and again["runs"][1] != payload["runs"][1]
    table = suite.report(payload)
    lines = [line for line in table.splitlines() if line.startswith("| tiny |")]
    assert [line.split(" | ")[1] for line in lines] == ["teacher", "distill", "int8"]  # finetune is the teacher
    distill = [r["stages"][1] for r in payload["runs"]]
    accuracies = [row["accuracy"] for row in distill]
    assert f"{sum(accuracies) / 2:.4f} +- " in lines[1]
    assert format_speedup(distill[0]["latency_8x128"], distill[0]["latency_control_8x128"]) in lines[1]
    assert "`hf-compress run recipes/tiny.yaml --set seed=N`" in table


def test_quick_overrides_cut_every_training_stage():
    sets = suite.quick_overrides(suite.RECIPES / "minilm-rt-frontier.yaml")
    assert "stages.finetune.max_steps=4" in sets and "stages.frontier.max_steps=4" in sets
    assert "stages.frontier.prune_end_step=2" in sets and "data.train_limit=64" in sets


def test_a_noisy_speedup_is_not_shown_as_a_number():
    row = {
        "stage": "s",
        "method": "quantize",
        "accuracy": 0.8,
        "params_m": 1.0,
        "size_mb": 1.0,
        "latency_8x128": 0.25,
        "latency_1x128": 0.5,
        "latency_control_8x128": 1.3,
        "latency_control_1x128": 1.0,
    }
    teacher = {**row, "latency_8x128": 1.0, "latency_1x128": 1.0}
    table = suite.report({"runs": [{"recipe": "x", "seed": 0, "metric": "accuracy", "teacher": teacher,
                                    "stages": [row]}]})  # fmt: skip
    assert "| noisy (control 0.77x) | 2.00x |" in table


def test_the_report_puts_the_recipes_headline_first(tmp_path):
    from benchmarks import report

    row = {"stage": "int8", "method": "quantize", "accuracy": 0.8, "params_m": 10.0, "size_mb": 10.0,
           "latency_8x128": 0.25, "latency_1x128": 0.5}  # fmt: skip
    teacher = {**row, "stage": "teacher", "accuracy": 0.82, "size_mb": 80.0, "latency_8x128": 1.0,
               "latency_1x128": 1.0}  # fmt: skip
    run = {"recipe": "x", "seed": 0, "metric": "accuracy", "teacher": teacher, "stages": [row]}
    payload = {"suite": "recipes", "argv": ["--recipe", "x"], "schema": 1, "runs": [run]}
    day = tmp_path / "2026-12-02"
    day.mkdir()
    (day / "recipes.json").write_text(json.dumps(payload))
    text = report.build(day, tmp_path / "RESULTS.md")
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Headline: the shipped recipes"
    assert "| x | int8 | quantize | 0.8000 | 97.6 | 4.00x | 2.00x | 10.0 | 10.00 |" in text
