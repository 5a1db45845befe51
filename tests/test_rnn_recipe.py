"""The distill stage with an RNN student spec, augmentation and cached teacher logits, end to end on tiny assets."""

import pytest
import yaml
from tiny_assets import make_assets
from transformers import AutoModelForSequenceClassification

from hf_compress.recipes import RecipeError, load_recipe, parse_recipe
from hf_compress.runner import run_recipe


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("rnn-assets"), n_train=24, n_eval=8)


def recipe(assets, **distill):
    stage = {
        "name": "bilstm",
        "method": "distill",
        "student": {"type": "rnn", "hidden_size": 6, "embedding_size": 8},
        "augment": {"copies": 1, "seed": 0},
        "cache_teacher_logits": True,
        "kd_loss_type": "mse",
        "hard_label_weight": 0.5,
        "max_steps": 2,
        "per_device_train_batch_size": 8,
        "use_cpu": True,
        **distill,
    }
    return {
        "name": "tiny-rnn",
        "teacher": {"source": str(assets / "teacher")},
        "data": {"source": "files", "max_length": 16,
                 "files": {s: str(assets / f"{s}.csv") for s in ("train", "validation", "test")}},
        "stages": [stage, {"name": "int8", "method": "quantize"}, {"name": "evaluate", "method": "evaluate"}],
    }  # fmt: skip


def test_rnn_distill_stage_runs_and_reloads(assets, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(assets)))
    results = run_recipe(load_recipe(path), tmp_path / "out")
    assert [r["stage"] for r in results] == ["bilstm", "int8"]
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "00-bilstm")
    assert type(student).__name__ == "RNNStudentForSequenceClassification" and student.config.embedding_size == 8
    quantized = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "01-int8")
    assert type(quantized.embeddings).__name__ == "Int8Embedding"
    assert (tmp_path / "out" / "00-bilstm" / "tokenizer.json").is_file()  # the teacher's tokenizer beside it


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(student={"type": "cnn"}), r"student type='cnn' is not supported; choose one of \['rnn', 'vit'\]"),
        (dict(student={"cell": "lstm", "width": 3}), r"'student' has unknown key\(s\) \['width'\]; valid keys"),
        (dict(student={"cell": "tcn"}), r"cell='tcn' is not supported"),
        (dict(student={"hidden_size": 4}, student_layers=[0]), "either student_layers .* or a student built"),
        (dict(augment={"copies": -1}), r"copies must be an int >= 0"),
        (dict(augment={"flag_column": "x"}), r"'augment' has unknown key\(s\) \['flag_column'\]"),
        (dict(augment=[1]), r"augment must be dict, got list"),
        (dict(cache_teacher_logits="yes"), r"cache_teacher_logits must be bool"),
    ],
)
def test_bad_rnn_stage_keys_are_refused(assets, change, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(recipe(assets, **change))
