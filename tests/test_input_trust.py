"""Inputs that used to run to exit 0 with numbers that mean nothing: each is now a clear error or a correct result
(YAML structure, teacher configs, tokenizers, label orders, regression labels, splits, metric direction)."""

import json

import pytest
import torch
from conftest import bert_config
from tiny_assets import expect_cli_error, make_assets, run_cli, tiny_recipe, write_csv
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForSequenceClassification

from hf_compress.data.labels import align_with_teacher_head
from hf_compress.metrics import higher_is_better, percent_of_teacher
from hf_compress.recipes import MAX_EXPANDED_NODES, load_recipe, load_yaml, parse_recipe
from hf_compress.runner import Context, write_summary
from hf_compress.validation import RecipeError


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))


# ---- YAML structure --------------------------------------------------------------------------------------------


def test_a_key_given_twice_is_refused_with_both_lines():
    with pytest.raises(RecipeError, match=r"line 3: key 'max_length' appears twice .*first on line 2"):
        load_yaml("data:\n  max_length: 64\n  max_length: 128\n")
    with pytest.raises(RecipeError, match="key 'method' appears twice"):
        load_yaml("stages:\n  - {method: distill, method: quantize}\n")
    assert load_yaml("base: &b {a: 1}\nx: {<<: *b, c: 2}\n") == {"base": {"a": 1}, "x": {"a": 1, "c": 2}}


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10**9 leaves, ~800 bytes
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        RecipeError, match=rf"recipe .*bomb.yaml: The YAML expands to more than {MAX_EXPANDED_NODES:,}"
    ):
        load_recipe(bomb)
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("name: &n [1, *n]\n")
    with pytest.raises(RecipeError, match="an anchor refers to itself"):
        load_recipe(recursive)


def test_cli_dry_run_of_an_alias_bomb_exits_2(tmp_path, capsys):
    from hf_compress.cli import main

    path = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path.write_text("\n".join(lines) + "\n")
    expect_cli_error(capsys, main(["run", str(path), "--dry-run"]), "expands to more than")


def test_misspelt_teacher_config_keys_are_refused_with_a_suggestion(assets):
    raw = tiny_recipe(assets)
    raw["teacher"] = {"source": "config", "config": {"model_type": "bert", "hiden_size": 32, "num_labels": 2}}
    with pytest.raises(RecipeError, match=r"'hiden_size' \(did you mean 'hidden_size'\?\)"):
        parse_recipe(raw)
    raw["teacher"]["config"] = {"model_type": "bert", "hidden_size": 32, "num_attention_heads": 4, "num_labels": 2}
    assert parse_recipe(raw).teacher.config["hidden_size"] == 32


# ---- tokenizers --------------------------------------------------------------------------------------------------


def test_a_teacher_folder_without_tokenizer_files_is_refused(assets, tmp_path, capsys):
    teacher = tmp_path / "bare"
    BertForSequenceClassification(bert_config(num_labels=2)).save_pretrained(teacher)  # weights, no tokenizer
    raw = tiny_recipe(assets)
    raw["teacher"]["source"] = str(teacher)
    expect_cli_error(capsys, run_cli(tmp_path, raw), "has no tokenizer files")
    assert not (tmp_path / "out" / "00-int8").exists()


def test_a_tokenizer_that_does_not_fit_the_embeddings_is_refused(assets, tmp_path, capsys):
    teacher = tmp_path / "small-vocab"
    BertForSequenceClassification(bert_config(num_labels=2, vocab_size=16)).save_pretrained(teacher)
    AutoTokenizer.from_pretrained(assets / "teacher").save_pretrained(teacher)  # 64 tokens for 16 rows
    raw = tiny_recipe(assets)
    raw["teacher"]["source"] = str(teacher)
    expect_cli_error(capsys, run_cli(tmp_path, raw), r"the tokenizer gives 48 token\(s\) ids at or past the model's "
                                                     r"vocab_size=16 \(e\.g\. \['w11', 'w12', 'w13'\]\)")  # fmt: skip


@pytest.mark.parametrize("added, refused", [(2, None), (3, r"'\[NEW2\]'")])
def test_added_tokens_must_fit_the_embedding_table(assets, tmp_path, capsys, added, refused):
    teacher = tmp_path / "added"
    BertForSequenceClassification(bert_config(num_labels=2, vocab_size=66)).save_pretrained(teacher)
    tokenizer = AutoTokenizer.from_pretrained(assets / "teacher")  # 64 tokens
    tokenizer.add_tokens([f"[NEW{i}]" for i in range(added)])
    tokenizer.save_pretrained(teacher)
    raw = tiny_recipe(assets)
    raw["teacher"]["source"] = str(teacher)
    if refused is None:
        assert run_cli(tmp_path, raw) == 0
    else:
        expect_cli_error(
            capsys, run_cli(tmp_path, raw), rf"gives 1 token\(s\) ids at or past .*vocab_size=66 .*{refused}"
        )


# ---- label orders --------------------------------------------------------------------------------------------


def _named_teacher(tmp_path, assets, id2label):
    teacher = tmp_path / "named"
    torch.manual_seed(0)
    config = bert_config(num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    BertForSequenceClassification(config).save_pretrained(teacher)
    AutoTokenizer.from_pretrained(assets / "teacher").save_pretrained(teacher)
    return teacher


def _named_rows(n=24):
    return [[f"w{i} w{(3 * i) % 50} w{(7 * i) % 50}", "pos" if i % 3 else "neg"] for i in range(n)]


def test_string_labels_follow_the_teacher_heads_names_not_sorted_order(assets, tmp_path):
    teacher = _named_teacher(tmp_path, assets, {0: "pos", 1: "neg"})  # sorted order would be neg=0, pos=1
    raw = tiny_recipe(assets)
    raw["teacher"]["source"] = str(teacher)
    for split in ("train", "validation", "test"):
        raw["data"]["files"][split] = str(write_csv(tmp_path / f"{split}.csv", _named_rows()))
    assert run_cli(tmp_path, raw) == 0
    model = AutoModelForSequenceClassification.from_pretrained(teacher).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    texts, names = zip(*_named_rows(), strict=True)
    with torch.no_grad():
        ids = model(**tokenizer(list(texts), padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    expected = sum(model.config.id2label[i] == name for i, name in zip(ids, names, strict=True)) / len(names)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["teacher"]["accuracy"] == pytest.approx(expected)
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "00-int8").config
    assert saved.id2label == {0: "pos", 1: "neg"}


def test_label_names_that_differ_from_the_heads_are_refused_unless_index_order_is_asked(assets, tmp_path, capsys):
    teacher = _named_teacher(tmp_path, assets, {0: "negative", 1: "positive"})
    raw = tiny_recipe(assets)
    raw["teacher"]["source"] = str(teacher)
    for split in ("train", "validation", "test"):
        raw["data"]["files"][split] = str(write_csv(tmp_path / f"{split}.csv", _named_rows()))
    expect_cli_error(capsys, run_cli(tmp_path, raw), r"head has classes .*negative.* but the data's labels are .*neg")
    raw["teacher"]["label_order"] = "index"
    assert run_cli(tmp_path, raw, out=tmp_path / "index") == 0
    raw["teacher"]["label_order"] = "sorted"
    with pytest.raises(RecipeError, match="label_order must be 'names'"):
        parse_recipe(raw)


def test_label_alignment_renumbers_every_split():
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"label": ClassLabel(names=["a", "b", "c"]), "text": Value("string")})
    ds = Dataset.from_dict({"label": [0, 1, 2, 2], "text": ["x"] * 4}, features=features)
    splits, id2label = align_with_teacher_head({"train": ds, "test": ds}, "label", {0: "a", 1: "b", 2: "c"},
                                               {"0": "c", "1": "A", "2": "b"}, "names")  # fmt: skip
    assert id2label == {0: "c", 1: "A", 2: "b"}
    for split in splits.values():
        assert split["label"] == [1, 2, 0, 0] and split.features["label"].names == ["c", "A", "b"]
    same, _ = align_with_teacher_head({"train": ds}, "label", {0: "a", 1: "b", 2: "c"},
                                      {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, "names")  # fmt: skip
    assert same["train"]["label"] == [0, 1, 2, 2]  # generic names: nothing to compare, index order kept


# ---- regression labels, text cells and splits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [("inf", "row 1 of the train split has the regression label inf"), ("-inf", "has the regression label -inf"),
     ("nan", "has empty values")],  # a CSV reader reads nan as a missing value
)  # fmt: skip
def test_a_non_finite_regression_label_is_refused(assets, tmp_path, capsys, bad, message):
    raw = tiny_recipe(assets)
    raw["teacher"]["num_labels"] = 1
    good = [["w1 w2", 0.5], ["w3", 2.5], ["w4", 1.5]] * 3
    for split in ("validation", "test"):
        raw["data"]["files"][split] = str(write_csv(tmp_path / f"{split}.csv", good))
    rows = [["w1 w2", 0.5], ["w3", bad], ["w4", 1.5]] * 3
    raw["data"]["files"]["train"] = str(write_csv(tmp_path / "train.csv", rows))
    expect_cli_error(capsys, run_cli(tmp_path, raw), message)


def test_an_empty_text_cell_names_its_row(assets, tmp_path, capsys):
    raw = tiny_recipe(assets)
    rows = [["w1 w2", 0], ["", 1], ["w3", 1]] * 3
    raw["data"]["files"]["validation"] = str(write_csv(tmp_path / "validation.csv", rows))
    expect_cli_error(
        capsys, run_cli(tmp_path, raw), r"data.text_column 'text': row 1 of the validation split is empty"
    )


def test_a_reported_split_that_is_the_training_data_is_refused(assets):
    raw = tiny_recipe(assets)
    raw["data"]["test_split"] = "train"
    with pytest.raises(RecipeError, match="test_split 'train' is the training data too"):
        parse_recipe(raw)
    raw = tiny_recipe(assets)
    raw["data"]["files"]["test"] = raw["data"]["files"]["train"]
    with pytest.raises(RecipeError, match=r"test_split 'test' is the training data too \(the same file\)"):
        parse_recipe(raw)
    raw = tiny_recipe(assets)
    raw["data"]["test_split"] = None
    raw["data"]["eval_split"] = "train"
    with pytest.raises(RecipeError, match="eval_split 'train' is the training data too"):
        parse_recipe(raw)


# ---- metric direction --------------------------------------------------------------------------------------------


def test_percent_of_teacher_reads_below_100_for_worse_whatever_the_metric_direction():
    assert not higher_is_better("mse") and not higher_is_better("eval_loss") and higher_is_better("accuracy")
    assert percent_of_teacher("accuracy", 0.8, 1.0) == pytest.approx(80.0)
    assert percent_of_teacher("mse", 0.7, 0.1) == pytest.approx(100 / 7)  # 7x the error: 14 %, not 700 %
    assert percent_of_teacher("mse", 0.05, 0.1) == pytest.approx(200.0)


def test_the_summary_of_a_regression_recipe_says_lower_is_better(assets, tmp_path):
    raw = tiny_recipe(assets)
    raw["data"]["metric"] = "mse"
    ctx = Context(recipe=parse_recipe(raw), output_dir=tmp_path)
    row = {"mse": 0.7, "params_m": 1.0, "size_mb": 1.0, "latency_8x128": 1.0, "latency_1x128": 1.0}
    ctx.results.append({**row, "stage": "int8", "method": "quantize", "folder": "00-int8"})
    write_summary(ctx, {**row, "mse": 0.1, "stage": "teacher"})
    table = (tmp_path / "summary.md").read_text()
    assert "mse (lower is better)" in table and "| int8 | quantize | 0.7000 | 14.3 |" in table


# ---- truncated weights -------------------------------------------------------------------------------------------


def test_a_truncated_weights_file_is_one_line_for_run_evaluate_and_export(assets, tmp_path, capsys):
    import shutil

    from hf_compress.cli import main

    teacher = tmp_path / "truncated"
    shutil.copytree(assets / "teacher", teacher)
    weights = teacher / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    raw = tiny_recipe(assets)
    raw["teacher"]["source"] = str(teacher)
    expect_cli_error(capsys, run_cli(tmp_path, raw), "its weights file is truncated or corrupt")
    config = tmp_path / "evaluate.yaml"
    config.write_text(json.dumps({"data": tiny_recipe(assets)["data"]}))  # JSON is YAML
    code = main(["evaluate", "--model", str(teacher), "--config", str(config), "--output-dir", str(tmp_path / "ev")])
    expect_cli_error(capsys, code, "its weights file is truncated or corrupt")
    code = main(["export", str(teacher), "--output-dir", str(tmp_path / "onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "are truncated or corrupt" in err and "Traceback" not in err, err


def test_yaml_nested_hundreds_of_levels_deep_is_one_line(tmp_path, capsys):
    from hf_compress.cli import main

    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 2000 + "]" * 2000 + "\n")
    expect_cli_error(capsys, main(["run", str(path), "--dry-run"]), "nests too deeply")
    code = main(["quantize", "--config", str(path), "--dry-run"])
    expect_cli_error(capsys, code, r"--config .*deep.yaml: The YAML nests too deeply")
