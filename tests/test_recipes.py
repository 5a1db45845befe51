from pathlib import Path

import pytest
import yaml

from hf_compress.cli import main as cli_main
from hf_compress.recipes import RecipeError, apply_overrides, parse_recipe

RECIPES = sorted(Path(__file__).resolve().parent.parent.joinpath("recipes").glob("*.yaml"))


def base(**stage):
    return {
        "teacher": {"source": "some/teacher"},
        "data": {"source": "files", "files": {"train": "t.csv", "validation": "v.csv", "test": "e.csv"}},
        "stages": [{"method": "distill", "max_steps": 3, **stage}],
    }


def test_valid_recipe_resolves_defaults():
    recipe = parse_recipe(base(hidden_weight=1.0, student_layers=[0, 2]))
    stage = recipe.stages[0]
    assert stage.fields == {"max_steps": 3, "hidden_weight": 1.0} and stage.extras == {"student_layers": [0, 2]}
    resolved = recipe.resolved()
    assert resolved["stages"][0]["report_to"] == "none" and resolved["data"]["max_length"] == 128
    config = stage.config("out")
    assert config.hidden_weight == 1.0 and config.max_steps == 3


def test_prune_method_defaults_to_the_one_shot_baseline():
    raw = base()
    raw["stages"] = [{"method": "prune", "target_intermediate_size": 32, "max_steps": 3}]
    config = parse_recipe(raw).stages[0].config("out")
    assert (config.pruning_schedule, config.importance) == ("oneshot", "magnitude")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda r: r.update(teachr={}),
            r"unknown key\(s\) \['teachr'\]. Valid keys: \['auto', 'data', 'name', 'seed', 'stages', 'teacher'\]",
        ),
        (
            lambda r: r["stages"][0].update(learning_rat=1),
            r"stage 0 \(distill\): unknown key\(s\) \['learning_rat'\]. Valid keys: \[.*'learning_rate'",
        ),
        (lambda r: r["stages"][0].update(max_steps="ten"), "max_steps must be int, got str 'ten'"),
        (lambda r: r["stages"][0].update(hidden_weight=True), "hidden_weight must be float or int, got bool"),
        (
            lambda r: r["stages"][0].update(method="distil"),
            r"unknown method 'distil'; valid methods: \['distill', 'evaluate'",
        ),
        (lambda r: r.update(stages=[]), "'stages' is empty"),
        (lambda r: r["stages"].append({"method": "distill"}), "stage name 'distill' is used twice"),
        (lambda r: r["data"].update(task="audio"), "task='audio' is not supported"),
        (lambda r: r["data"].update(max_length="long"), "data: max_length must be int"),
        (lambda r: r["data"].update(files=None), "source 'files' needs files"),
        (
            lambda r: r["stages"][0].update(temperature=0),
            r"stage 0 \(distill\): temperature must be a finite number > 0",
        ),
        (
            lambda r: r["stages"].append({"method": "homodistil", "max_steps": 5}),
            "stage 1 \\(homodistil\\): HomoDistilConfig needs at least one pruning target",
        ),
        (
            lambda r: r["stages"].append({"method": "quantize", "quant_method": "int3"}),
            "method='int3' is not supported",
        ),
        (lambda r: r["stages"].append("quantize"), "each stage is a mapping with a 'method'"),
    ],
)
def test_invalid_recipes(mutate, message):
    raw = base()
    mutate(raw)
    with pytest.raises(RecipeError, match=message):
        parse_recipe(raw)


def test_overrides_by_stage_name_index_and_section():
    raw = base()
    out = apply_overrides(raw, ["stages.distill.max_steps=10", "stages.0.learning_rate=1e-4", "data.max_length=32",
                                "stages.distill.student_layers=[1, 3]"])  # fmt: skip
    stage = out["stages"][0]
    assert stage["max_steps"] == 10 and stage["learning_rate"] == 1e-4 and stage["student_layers"] == [1, 3]
    assert out["data"]["max_length"] == 32 and raw["stages"][0]["max_steps"] == 3  # the input is not mutated


@pytest.mark.parametrize(
    "override, message", [("stages.quantize.x=1", "no single stage 'quantize'"), ("data", "expected path=value")]
)
def test_bad_overrides(override, message):
    with pytest.raises(RecipeError, match=message):
        apply_overrides(base(), [override])


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_dry_runs(path, capsys):
    assert cli_main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out[out.index("name:") :])
    assert len(resolved["stages"]) == len(yaml.safe_load(path.read_text())["stages"])


def test_cli_reports_recipe_errors_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(base(bogus=1)))
    assert cli_main(["run", str(bad), "--dry-run"]) == 2
    assert "unknown key(s) ['bogus']" in capsys.readouterr().err
    assert cli_main(["run", str(tmp_path / "missing.yaml"), "--dry-run"]) == 2
