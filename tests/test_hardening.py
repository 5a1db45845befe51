"""Runner side: no data loss outside --output-dir, no secrets or absolute paths on disk, no metric code
without opt-in, a fingerprinted .work, and one clear line (CLI exit code 2) for every bad recipe, data or path."""

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from conftest import bert_config
from tiny_assets import DISTILL, FINETUNE, expect_cli_error, make_assets, run_cli, tiny_recipe, write_csv
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

import hf_compress.runner as runner
import hf_compress.stages.training as training
from hf_compress.cli import check_push_folder
from hf_compress.cli import main as cli_main
from hf_compress.recipes import RecipeError, parse_recipe
from hf_compress.validation import inside, public

TOKEN = "hf_" + "Abc123" * 6


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))


# ---- parse time: each bad value names the field and the fix ------------------------------------------------


def _stage(**kw):
    return lambda r: r["stages"].__setitem__(0, {**r["stages"][0], **kw})


@pytest.mark.parametrize(
    "mutate, message",
    [
        (_stage(name="../../victim"), r"stage name '../../victim' is not a valid name"),
        (_stage(name="a/b"), "is not a valid name"),
        (_stage(name="/abs"), "is not a valid name"),
        (_stage(name=".."), "is not a valid name"),
        (lambda r: r.update(name="x/../../y"), "recipe name 'x/../../y' is not a valid name"),
        (lambda r: r["data"].update(metric="acuracy"), r"metric 'acuracy' is not shipped.*Did you mean 'accuracy'"),
        (lambda r: r["data"].update(metric="glue"), "set data.trust_remote_metric: true"),
        (lambda r: r["data"].update(train_limit=0), r"train_limit must be >= 1 \(or null for no limit\), got 0"),
        (lambda r: r["data"].update(eval_limit=-3), "eval_limit must be >= 1"),
        (lambda r: r["data"].update(max_length=0), "max_length must be >= 1 token, got 0"),
        (lambda r: r["data"].pop("source"), "files are only read with source: files"),
        (lambda r: r.update(seed=-1), r"seed must be an integer in 0..2\*\*32-1, got -1"),
        (lambda r: r["data"].update(label_column="text"), "label_column 'text' is also an input column"),
        (
            lambda r: r["data"].update(eval_split="dev"),
            r"eval_split 'dev' is not one of data.files.*set data.eval_split",
        ),
        (_stage(method="distill", student_layers=[], max_steps=2), "student_layers must be a non-empty list"),
        (_stage(method="distill", student_layers=[1, 1], max_steps=2), "names a layer twice"),
        (_stage(calibration_samples=0), "calibration_samples must be >= 1, got 0"),
        (lambda r: r["stages"].insert(0, {**FINETUNE, "per_device_train_batch_size": 0}), "batch_size must be >= 1"),
        (lambda r: r["stages"].insert(0, {**FINETUNE, "learning_rate": -1.0}), "learning_rate must be a finite"),
        (lambda r: r["stages"].insert(0, {**FINETUNE, "max_steps": 0}), "nothing to train"),
        (lambda r: r["teacher"].update(source="./no/such/teacher"), "is not an existing directory"),
        (lambda r: r["teacher"].update(source="config"), "needs teacher.config with a model_type"),
        (
            lambda r: r["teacher"].update(
                source="config", config={"model_type": "bert", "hidden_size": 30, "num_attention_heads": 4}
            ),
            "hidden_size=30 is not a multiple of num_attention_heads=4",
        ),  # fmt: skip
        (
            lambda r: (
                r["teacher"].update(source="config", config={"model_type": "bert"}),
                r["data"].update(task="image-classification"),
            ),
            "is a text model but data.task is 'image-classification'",
        ),  # fmt: skip
        (
            lambda r: r["teacher"].update(source="config", config={"model_type": "bret"}),
            "model_type 'bret' is unknown",
        ),
        (lambda r: r["teacher"].update(num_labels=0), "num_labels must be >= 1"),
        (lambda r: r["teacher"].update(config={"model_type": "bert"}), "config is only read with source: config"),
        (lambda r: r["stages"].append(dict(DISTILL)), "trains \\(distill\\) after the quantize stage.*train first"),
        (lambda r: r["stages"].append({"name": "q2", "method": "quantize"}), "quantizes again.*quantize last"),
    ],
)
def test_bad_recipe_values_fail_at_parse_time(assets, mutate, message):
    raw = tiny_recipe(assets)
    mutate(raw)
    with pytest.raises(RecipeError, match=message):
        parse_recipe(raw)


def test_a_metric_that_is_not_shipped_needs_the_opt_in(assets):
    from hf_compress.metrics import load_metric

    raw = tiny_recipe(assets, metric="glue", trust_remote_metric=True)
    assert parse_recipe(raw).data.trust_remote_metric
    with pytest.raises(ValueError, match="metric 'glue' is not shipped.*trust_remote_metric=True"):
        load_metric("glue")


def test_cli_bad_inputs_exit_2_with_one_line(assets, tmp_path, capsys):
    raw = tiny_recipe(assets)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    code = cli_main(["run", str(path), "--dry-run", "--set", "stages.int8.group_size=[broken"])
    expect_cli_error(capsys, code, "the value is not valid YAML")
    code = cli_main(["run", str(path), "--dry-run", "--set", "data.max_length.x=1"])
    expect_cli_error(capsys, code, "data.max_length is not a mapping")
    stage_config = tmp_path / "stage.yaml"
    stage_config.write_text(yaml.safe_dump({"data": raw["data"]}))
    code = cli_main(["evaluate", "--model", str(tmp_path / "missing"), "--config", str(stage_config), "--dry-run"])
    expect_cli_error(capsys, code, "--model .* is not an existing model folder")
    # `method: int8_static` in a quantize --config means the quantization method
    stage_config.write_text(yaml.safe_dump({**{k: raw[k] for k in ("teacher", "data")}, "method": "int8_static"}))
    assert cli_main(["quantize", "--config", str(stage_config), "--dry-run"]) == 0
    assert "quant_method: int8_static" in capsys.readouterr().out
    stage_config.write_text(yaml.safe_dump({**{k: raw[k] for k in ("teacher", "data")}, "method": "distill"}))
    code = cli_main(["quantize", "--config", str(stage_config), "--dry-run"])
    expect_cli_error(capsys, code, "does not match the command 'quantize'")
    with pytest.raises(RecipeError):  # --debug: the traceback, not the one line
        cli_main(["run", str(path), "--dry-run", "--debug", "--set", "data.max_length=0"])


# ---- data and teacher problems found when the data is read -------------------------------------------------


@pytest.mark.parametrize(
    "rows, data, message",
    [
        ([], {}, r"data.files.\w+ \(\w+.csv\) has a header and no data rows"),
        ([["w1 w2", 1], ["w3", 2]] * 4, {}, r"labels run 1..2 but class ids must run 0..K-1"),
        ([["w1 w2", 0.5], ["w3", 1.0]] * 4, {}, "holds non-integer float values but the task is classification"),
        ([["w1 w2", 0], ["w3", 1]] * 4, {"num_labels": 3}, "teacher.num_labels=3 but .* has 2 classes"),
        ([["w1 w2", 0], ["w3", 1]] * 4, {"max_length": 100}, "max_length=100 exceeds the teacher's"),
        ([["w1 w2", 0], ["w3", 1]] * 4, {"task": "image-classification"}, "is a text model .* but data.task"),
        ([["w1 w2", 0], ["w3", 1], ["w4", 2]] * 4, {}, "classification head has 2 labels but the data has 3 classes"),
    ],
    ids=[
        "header-only",
        "labels-1..K",
        "float-labels",
        "num-labels",
        "max-length",
        "image-task-text-teacher",
        "head-size",
    ],
)
def test_bad_data_and_teachers_exit_2_before_training(assets, tmp_path, capsys, rows, data, message):
    raw = tiny_recipe(assets)
    for split in ("train", "validation", "test"):
        raw["data"]["files"][split] = str(write_csv(tmp_path / f"{split}.csv", rows))
    if "num_labels" in data:
        raw["teacher"]["num_labels"] = data.pop("num_labels")
    raw["data"].update(data)
    expect_cli_error(capsys, run_cli(tmp_path, raw), message)
    assert not (tmp_path / "out" / "00-int8").exists()


def test_string_labels_map_to_sorted_ids_like_run_glue(assets, tmp_path):
    rows = [[f"w{i} w{i + 1}", ("pos" if i % 2 else "neg")] for i in range(16)]
    raw = tiny_recipe(assets)
    for split in ("train", "validation", "test"):
        raw["data"]["files"][split] = str(write_csv(tmp_path / f"{split}.csv", rows))
    assert run_cli(tmp_path, raw) == 0
    config = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "00-int8").config
    assert config.id2label == {0: "neg", 1: "pos"} and config.label2id == {"neg": 0, "pos": 1}


def test_missing_teacher_directory_at_run_time(assets, tmp_path, capsys):
    raw = tiny_recipe(assets)
    raw["teacher"]["source"] = str(tmp_path / "gone")
    expect_cli_error(capsys, run_cli(tmp_path, raw), "is not an existing directory; fix the path")


# ---- no data loss outside the output folder ----------------------------------------------------------------


def test_traversal_names_never_touch_folders_outside_the_output(assets, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    out = tmp_path / "a" / "b"
    raw = tiny_recipe(assets, {"name": "../../victim", "method": "quantize"})
    expect_cli_error(capsys, run_cli(tmp_path, raw, out=out), "is not a valid name")
    raw = tiny_recipe(assets, dict(FINETUNE))
    out.mkdir(parents=True)
    (out / ".work-00-finetune").symlink_to(victim)  # a planted link: the runner must not follow it to rmtree
    expect_cli_error(capsys, run_cli(tmp_path, raw, out=out), "outside the output folder")
    assert (victim / "precious.txt").read_text() == "keep me" and sorted(os.listdir(victim)) == ["precious.txt"]
    with pytest.raises(RecipeError, match="outside the output folder"):
        inside(out, out / ".." / "x")
    with pytest.raises(RecipeError, match="outside the output folder"):
        inside(out, out)


def test_force_on_a_folder_that_cannot_be_replaced_leaves_no_tmp_and_keeps_the_output(
    assets, tmp_path, capsys, monkeypatch
):
    raw = tiny_recipe(assets)
    out = tmp_path / "out"
    assert run_cli(tmp_path, raw) == 0
    before = (out / "00-int8" / "model.safetensors").read_bytes()
    real_replace = os.replace

    def read_only(src, dst):  # what a read-only folder does to the rename (root ignores chmod in this sandbox)
        if Path(src).name.startswith(".tmp-"):
            raise PermissionError(13, "Permission denied")
        return real_replace(src, dst)

    monkeypatch.setattr(runner.os, "replace", read_only)
    expect_cli_error(capsys, run_cli(tmp_path, raw, "--force"), r"chmod -R u\+w")
    assert not [p for p in out.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    assert (out / "00-int8" / "model.safetensors").read_bytes() == before
    assert not (out / "summary.md").exists()  # never left listing a folder that may not be there


def test_corrupt_stage_marker_or_output_says_use_force(assets, tmp_path, capsys):
    raw = tiny_recipe(assets)
    assert run_cli(tmp_path, raw) == 0
    (tmp_path / "out" / "00-int8" / runner.DONE_NAME).write_text("{not json")
    expect_cli_error(capsys, run_cli(tmp_path, raw), "hf_compress_stage.json is corrupt .* re-run with --force")
    assert run_cli(tmp_path, raw, "--force") == 0
    (tmp_path / "out" / "00-int8" / "model.safetensors").write_bytes(b"garbage")
    expect_cli_error(capsys, run_cli(tmp_path, raw), "cannot be loaded .* Re-run with --force")


def test_an_eval_split_the_data_does_not_have_names_the_recipe_key(assets, tmp_path, capsys):
    raw = tiny_recipe(assets)
    raw["data"] = {"source": "demo-rotten-tomatoes", "eval_split": "dev", "max_length": 16, "train_limit": 8}
    expect_cli_error(capsys, run_cli(tmp_path, raw), r"data has no split 'dev'.*Set data.eval_split to one of them")


# ---- secrets, local paths, model-index ---------------------------------------------------------------------


def test_tokens_never_reach_disk_or_stdout_and_cards_carry_no_local_paths(assets, tmp_path, capsys):
    raw = tiny_recipe(assets, {**FINETUNE, "hub_token": TOKEN}, {"name": "int8", "method": "quantize"})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli_main(["run", str(path), "--dry-run"]) == 0
    assert TOKEN not in capsys.readouterr().out
    out = tmp_path / "out"
    assert cli_main(["run", str(path), "--output-dir", str(out)]) == 0
    assert TOKEN not in capsys.readouterr().out
    for file in out.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            assert TOKEN.encode() not in data, file
            if file.suffix in (".md", ".yaml", ".json"):
                assert str(tmp_path).encode() not in data, file  # no absolute local path
    card = (out / "01-int8" / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    result = metadata["model-index"][0]["results"][0]
    measured = json.loads((out / "01-int8" / runner.DONE_NAME).read_text())["measurements"]["accuracy"]
    assert result["metrics"][0] == {"type": "accuracy", "value": round(measured, 4), "name": "accuracy"}
    assert result["task"]["type"] == "text-classification" and result["dataset"]["split"] == "test"
    assert "base_model" not in metadata  # a local teacher folder is not a Hub id
    assert check_push_folder(out / "01-int8")
    (out / "01-int8" / "notes.md").write_text(f"hub_token: {TOKEN}\n")
    with pytest.raises(ValueError, match="looks like it holds a secret"):
        check_push_folder(out / "01-int8")


def test_public_view_redacts_and_relativises(tmp_path):
    value = {"hub_token": "x", "a": {"password": "p", "pad_token_id": 0}, "files": [str(tmp_path / "o" / "t.csv")],
             "other": "/home/me/data.csv", "id": "org/model"}  # fmt: skip
    shown = public(value, tmp_path / "o")
    assert shown == {"hub_token": "<redacted>", "a": {"password": "<redacted>", "pad_token_id": 0},
                     "files": ["t.csv"], "other": "data.csv", "id": "org/model"}  # fmt: skip


# ---- resume: fingerprinted .work, no pickle, --force starts fresh ------------------------------------------


def _crash_before_saving(monkeypatch, name):
    real_save = runner.save_atomically

    def crash(model, processor, target, files):
        if target.name == name:
            raise KeyboardInterrupt("killed while saving")
        return real_save(model, processor, target, files)

    monkeypatch.setattr(runner, "save_atomically", crash)


def test_work_folder_is_fingerprinted_and_discarded_on_change_or_force(assets, tmp_path, monkeypatch):
    from hf_compress.recipes import load_recipe

    stage = {**DISTILL, "save_steps": 1, "max_steps": 2}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(assets, stage)))
    out = tmp_path / "out"
    _crash_before_saving(monkeypatch, "00-distill")
    with pytest.raises(KeyboardInterrupt):
        runner.run_recipe(load_recipe(path), out)
    checkpoint = out / ".work-00-distill" / "checkpoint-2"
    assert (checkpoint / "trainer_state.json").is_file()
    resumed = []
    real_last = training.last_complete_checkpoint
    monkeypatch.setattr(training, "last_complete_checkpoint", lambda w: resumed.append(real_last(w)) or resumed[-1])
    with pytest.raises(KeyboardInterrupt):  # unchanged: resumes from its checkpoint
        runner.run_recipe(load_recipe(path), out)
    assert resumed[-1] == str(checkpoint)
    with pytest.raises(KeyboardInterrupt):  # a new learning rate: the old checkpoints are not resumed
        runner.run_recipe(load_recipe(path, ["stages.distill.learning_rate=1e-3"]), out)
    assert resumed[-1] is None
    with pytest.raises(KeyboardInterrupt):  # --force with other student layers: fresh, no optimizer crash
        changed = ["stages.distill.student_layers=[1]", "stages.distill.learning_rate=1e-3"]
        runner.run_recipe(load_recipe(path, changed), out, force=True)
    assert resumed[-1] is None
    assert not (out / "summary.md").exists()


def test_finetune_checkpoints_hold_no_training_args_pickle(assets, tmp_path, monkeypatch):
    from hf_compress.recipes import parse_recipe as parse

    recipe = parse(tiny_recipe(assets, {**FINETUNE, "save_steps": 1, "hub_token": TOKEN}))
    assert recipe.resolved()["stages"][0]["save_strategy"] == "steps"  # checkpoints by default
    _crash_before_saving(monkeypatch, "00-finetune")
    with pytest.raises(KeyboardInterrupt):
        runner.run_recipe(recipe, tmp_path / "out")
    checkpoint = tmp_path / "out" / ".work-00-finetune" / "checkpoint-2"
    assert (checkpoint / "training_args.json").is_file() and not (checkpoint / "training_args.bin").exists()
    assert TOKEN not in (checkpoint / "training_args.json").read_text()


def test_a_trainer_given_a_quantized_model_says_train_first_quantize_last(tmp_path):
    from hf_compress import DistillationConfig, DistillationTrainer, QuantizationConfig, quantize

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config())
    student = quantize(BertForSequenceClassification(bert_config()).eval(), QuantizationConfig())
    args = DistillationConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    for s, t, role in ((student, teacher, "student"), (teacher, student, "teacher")):
        with pytest.raises(ValueError, match=f"The {role} is quantized.*Train first, quantize last"):
            DistillationTrainer(model=s, teacher_model=t, args=args)
