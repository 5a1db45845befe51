"""A tiny recipe through every stage, on local CSV files and a tiny BERT saved in the test: offline, fast."""

import json
import os
import sys

import pytest
import torch
import yaml
from conftest import bert_config
from tiny_assets import make_assets
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

import hf_compress.runner as runner
import hf_compress.stages.training as training
from hf_compress.cli import check_push_folder
from hf_compress.cli import main as cli_main
from hf_compress.recipes import load_recipe


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))


def write_recipe(assets, path, **stage_overrides):
    recipe = {
        "name": "tiny",
        "teacher": {"source": str(assets / "teacher")},
        "data": {"source": "files", "max_length": 16,
                 "files": {s: str(assets / f"{s}.csv") for s in ("train", "validation", "test")}},
        "stages": [
            {"name": "finetune", "method": "finetune", "max_steps": 2, "per_device_train_batch_size": 8,
             "use_cpu": True},
            {"name": "distill", "method": "distill", "student_layers": [0, 2], "max_steps": 2, "hidden_weight": 1.0,
             "use_cpu": True, "save_strategy": "steps", "save_steps": 1},
            {"name": "homodistil", "method": "homodistil", "target_hidden_size": 16, "target_num_heads": 2,
             "target_intermediate_size": 32, "prune_end_step": 2, "prune_every": 1, "max_steps": 3, "use_cpu": True},
            {"name": "int8", "method": "quantize", "quant_method": "int8_dynamic"},
            {"name": "evaluate", "method": "evaluate"},
        ],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_recipe_runs_every_stage_to_loadable_checkpoints_with_cards(assets, tmp_path, capsys):
    recipe = write_recipe(assets, tmp_path / "tiny.yaml")
    out = tmp_path / "out"
    assert cli_main(["run", str(recipe), "--output-dir", str(out)]) == 0
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["00-finetune", "01-distill", "02-homodistil", "03-int8"]
    assert not [p for p in out.iterdir() if p.name.startswith((".tmp", ".work"))]
    for name in folders:
        folder = out / name
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        assert (folder / "tokenizer.json").is_file() and (folder / "recipe.resolved.yaml").is_file()
        card = (folder / "README.md").read_text()
        metadata = yaml.safe_load(card.split("---")[1])
        assert "hf-compress" in metadata["tags"] and metadata["metrics"] == ["accuracy"]
        assert "| accuracy |" in card and "latency 8x128" in card
        if name == "02-homodistil":
            assert model.config.hidden_size == 16
    assert (out / "03-int8" / "README.md").read_text().count("import hf_compress") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["finetune", "distill", "homodistil", "int8"]
    assert "| int8 | quantize |" in (out / "summary.md").read_text()
    assert check_push_folder(out / "03-int8")

    # A re-run skips every finished stage; --force redoes them.
    capsys.readouterr()
    stamp = os.path.getmtime(out / "01-distill" / "model.safetensors")
    assert cli_main(["run", str(recipe), "--output-dir", str(out)]) == 0
    assert capsys.readouterr().err.count("finished earlier, skipped") == 4  # progress is on stderr
    assert os.path.getmtime(out / "01-distill" / "model.safetensors") == stamp
    assert (
        cli_main(
            [
                "run",
                str(recipe),
                "--output-dir",
                str(out),
                "--force",
                "--set",
                "stages.int8.quant_method=int8_weight_only",
            ]
        )
        == 0
    )
    assert "finished earlier" not in capsys.readouterr().err


def test_interrupted_stage_is_redone_and_resumes_from_its_checkpoint(assets, tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe(assets, tmp_path / "tiny.yaml"))
    recipe.stages = recipe.stages[:2]
    out = tmp_path / "out"
    real_save = runner.save_atomically

    def crash(model, processor, target, files):
        if target.name == "01-distill":
            raise KeyboardInterrupt("killed while saving")
        return real_save(model, processor, target, files)

    monkeypatch.setattr(runner, "save_atomically", crash)
    with pytest.raises(KeyboardInterrupt):
        runner.run_recipe(recipe, out)
    assert not (out / "01-distill").exists()  # no half-written stage output
    assert (out / ".work-01-distill" / "checkpoint-2").is_dir()

    resumed_from = []
    monkeypatch.setattr(runner, "save_atomically", real_save)
    monkeypatch.setattr(training, "get_last_checkpoint", lambda d: resumed_from.append(d) or
                        __import__("transformers.trainer_utils", fromlist=["x"]).get_last_checkpoint(d))  # fmt: skip
    runner.run_recipe(recipe, out)
    assert resumed_from  # the distill stage looked for, and found, its checkpoint
    assert (out / "01-distill" / runner.DONE_NAME).is_file()


def test_single_stage_command(assets, tmp_path):
    config = tmp_path / "quantize.yaml"
    config.write_text(yaml.safe_dump({
        "teacher": {"source": str(assets / "teacher")},
        "data": {"source": "files", "files": {s: str(assets / f"{s}.csv") for s in ("train", "validation", "test")},
                 "max_length": 16},
        "quant_method": "int4_weight_only", "group_size": 16,
    }))  # fmt: skip
    assert cli_main(["quantize", "--config", str(config), "--output-dir", str(tmp_path / "q")]) == 0
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "q" / "00-quantize")
    assert loaded.config.quantization_config.method == "int4_weight_only"


def test_unwritable_output_folder(assets, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    recipe = load_recipe(write_recipe(assets, tmp_path / "tiny.yaml"))
    with pytest.raises(PermissionError, match="is not writable.*choose another --output-dir"):
        runner.run_recipe(recipe, blocker / "out")


def test_push_folder_checks(tmp_path):
    torch.manual_seed(0)
    BertForSequenceClassification(bert_config()).save_pretrained(tmp_path / "stage")
    with pytest.raises(FileNotFoundError, match=r"missing \['README.md'\]"):
        check_push_folder(tmp_path / "stage")
    (tmp_path / "stage" / "README.md").write_text("card")
    assert "model.safetensors" in check_push_folder(tmp_path / "stage")
    (tmp_path / "stage" / "optimizer.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="holds pickle files"):
        check_push_folder(tmp_path / "stage")


def test_run_glue_style_example_distils_on_local_csv(assets, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "run_glue_distill.py"
    spec = importlib.util.spec_from_file_location("run_glue_distill", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    metrics = module.main([
        "--model_name_or_path", str(assets / "teacher"), "--teacher_model_name_or_path", str(assets / "teacher"),
        "--train_file", str(assets / "train.csv"), "--validation_file", str(assets / "validation.csv"),
        "--text_column", "text", "--output_dir", str(tmp_path / "glue"), "--do_train", "--do_eval",
        "--max_steps", "2", "--hidden_weight", "1.0", "--report_to", "none", "--use_cpu", "--save_strategy", "no",
    ])  # fmt: skip
    assert "eval_accuracy" in metrics and "eval_kd_loss" in metrics and "eval_hidden_loss" in metrics
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "glue").config.num_hidden_layers == 4
