"""`hf-compress export`: an output folder that overlaps the model folder, or holds a user's files, is refused before
anything is written (the export's own config.json and README.md would replace the checkpoint's)."""

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import bert_config

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from transformers import AutoModelForSequenceClassification, BertForSequenceClassification  # noqa: E402

from hf_compress import QuantizationConfig, quantize  # noqa: E402
from hf_compress.cli import main  # noqa: E402
from hf_compress.export import ExportError, export_onnx  # noqa: E402


def _stage(folder: Path) -> Path:
    """A quantized stage output with a card, as the runner writes it."""
    torch.manual_seed(0)
    model = quantize(BertForSequenceClassification(bert_config(num_hidden_layers=1)).eval(),
                     QuantizationConfig(method="int8_dynamic"))  # fmt: skip
    model.save_pretrained(folder)
    (folder / "README.md").write_text("# my int8 stage\n")
    return folder


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _overlap(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    stage = _stage(tmp_path / "run" / "02-int8")
    if kind == "same":
        return stage, stage
    if kind == "inside":
        return stage, stage / "onnx"
    if kind == "contains":
        return stage, tmp_path / "run"
    link = tmp_path / "link"  # a symlink to the model folder is the model folder
    link.symlink_to(stage, target_is_directory=True)
    return stage, link


RELATION = {"same": "is", "inside": "is inside", "contains": "contains", "symlink": "is"}


@pytest.mark.parametrize("kind", sorted(RELATION))
def test_an_output_folder_overlapping_the_model_folder_is_refused(tmp_path, capsys, kind):
    stage, out = _overlap(tmp_path, kind)
    before = _digest(tmp_path / "run")
    pattern = rf"The output folder {out} {RELATION[kind]} the model folder {stage}: .*e\.g\. {stage}-onnx\."
    with pytest.raises(ExportError, match=pattern):
        export_onnx(stage, out)
    capsys.readouterr()
    assert main(["export", str(stage), "--output-dir", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hf-compress: error:")]
    assert len(errors) == 1 and f"{RELATION[kind]} the model folder" in errors[0] and f"{stage}-onnx" in errors[0]
    assert _digest(tmp_path / "run") == before  # byte-identical, nothing added
    loaded = AutoModelForSequenceClassification.from_pretrained(stage)
    assert loaded.config.quantization_config.method == "int8_dynamic"


def test_an_existing_folder_of_user_files_is_refused_and_left_alone(tmp_path):
    stage = _stage(tmp_path / "stage")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    (out / "notes.md").write_text("keep me")
    before = _digest(out)
    with pytest.raises(ExportError, match=r"holds files that hf-compress export did not write \(config.json, "
                                          r"notes.md; no onnx_export.json\).*e\.g\. .*stage-onnx"):  # fmt: skip
        export_onnx(stage, out)
    assert _digest(out) == before
    (out / "x").write_text("a file")
    with pytest.raises(ExportError, match=r"mine/x is a file; choose a folder"):
        export_onnx(stage, out / "x")


def test_the_default_folder_and_a_previous_or_empty_export_folder_are_accepted(tmp_path):
    from hf_compress.export.onnx import default_output_dir

    stage = _stage(tmp_path / "stage")
    assert default_output_dir(f"{stage}/") == tmp_path / "stage-onnx"
    assert default_output_dir(".") == Path.cwd().with_name(Path.cwd().name + "-onnx")
    assert main(["export", str(stage)]) == 0  # default: stage-onnx beside it
    out = tmp_path / "stage-onnx"
    assert json.loads((out / "onnx_export.json").read_text())["passed"]
    assert main(["export", str(stage), "--output-dir", str(out)]) == 0  # a previous export is redone in place
    (tmp_path / "empty").mkdir()
    assert export_onnx(stage, tmp_path / "empty").passed
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    (interrupted / "model.onnx").write_bytes(b"half")  # an export stopped after saving the graph
    assert export_onnx(stage, interrupted).passed


def test_a_text_model_folder_ships_no_stand_in_tokenizer(tmp_path, capsys):
    from conftest import bert_config
    from transformers import BertForSequenceClassification, BertTokenizerFast

    from hf_compress.cli import main

    BertForSequenceClassification(bert_config(num_labels=2)).save_pretrained(tmp_path / "bare")
    assert main(["export", str(tmp_path / "bare"), "--output-dir", str(tmp_path / "onnx")]) == 0
    assert not any((tmp_path / "onnx" / name).exists() for name in ("tokenizer.json", "vocab.txt"))
    BertTokenizerFast(vocab={"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}).save_pretrained(tmp_path / "bare")
    code = main(["export", str(tmp_path / "bare"), "--output-dir", str(tmp_path / "onnx2")])
    assert code == 2 and re.search(r"the tokenizer has only \d tokens for a vocab_size=64", capsys.readouterr().err)
    assert not (tmp_path / "onnx2").exists()
