"""The recipe suite runs a recipe through the product's runner at several seeds, stores the runner's summary rows
as they are (with the summary schema), and renders them as the headline table."""

import json

import yaml
from tiny_assets import DISTILL, FINETUNE, make_assets, tiny_recipe

from benchmarks import common
from benchmarks import recipes as suite
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
    table = suite.report(payload)
    lines = [line for line in table.splitlines() if line.startswith("| tiny |")]
    assert [line.split(" | ")[1] for line in lines] == ["teacher", "distill", "int8"]  # finetune is the teacher
    distill = [r["stages"][1] for r in payload["runs"]]
    accuracies = [row["accuracy"] for row in distill]
    assert f"{sum(accuracies) / 2:.4f} +- " in lines[1]
    assert f"{1 / distill[0]['latency_8x128']:.2f}x" in lines[1]
    assert "`hf-compress run recipes/tiny.yaml --set seed=N`" in table


def test_quick_overrides_cut_every_training_stage():
    sets = suite.quick_overrides(suite.RECIPES / "minilm-rt-frontier.yaml")
    assert "stages.finetune.max_steps=4" in sets and "stages.frontier.max_steps=4" in sets
    assert "stages.frontier.prune_end_step=2" in sets and "data.train_limit=64" in sets
