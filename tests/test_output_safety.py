"""The runner replaces only what it wrote, never reads what it writes, holds one lock per output folder, and
cleans up after every failed write."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_assets import FINETUNE, expect_cli_error, make_assets, run_cli, tiny_recipe

import hf_compress.runner as runner
from hf_compress.lock import LOCK_NAME, output_lock
from hf_compress.validation import RecipeError


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))


# ---- folders hf-compress did not write are never replaced ------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_a_stage_folder_without_the_stage_marker_is_refused_and_kept(assets, tmp_path, capsys, force):
    out = tmp_path / "out"
    (out / "00-int8").mkdir(parents=True)
    (out / "00-int8" / "notes.txt").write_text("mine")
    code = run_cli(tmp_path, tiny_recipe(assets), *(["--force"] if force else []), out=out)
    expect_cli_error(capsys, code, r"00-int8 exists and was not written by hf-compress \(it has no hf_compress_stage")
    assert (out / "00-int8" / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(out / "00-int8")) == ["notes.txt"]


def test_a_work_folder_without_the_work_marker_is_refused_and_kept(assets, tmp_path, capsys):
    out = tmp_path / "out"
    (out / ".work-00-finetune").mkdir(parents=True)
    (out / ".work-00-finetune" / "data.bin").write_bytes(b"x")
    code = run_cli(tmp_path, tiny_recipe(assets, dict(FINETUNE)), "--force", out=out)
    expect_cli_error(capsys, code, r"\.work-00-finetune exists and was not written by hf-compress")
    assert (out / ".work-00-finetune" / "data.bin").read_bytes() == b"x"


def test_an_empty_stage_folder_and_our_own_outputs_are_replaced(assets, tmp_path):
    out = tmp_path / "out"
    (out / "00-int8").mkdir(parents=True)
    assert run_cli(tmp_path, tiny_recipe(assets), out=out) == 0
    assert (out / "00-int8" / runner.DONE_NAME).is_file()
    assert run_cli(tmp_path, tiny_recipe(assets), "--force", out=out) == 0  # ours: redone


def test_a_summary_in_a_folder_hf_compress_did_not_write_is_refused(assets, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("my notes")
    expect_cli_error(capsys, run_cli(tmp_path, tiny_recipe(assets), out=out), r"summary.md exists but .* was not")
    assert (out / "summary.md").read_text() == "my notes"


# ---- inputs and outputs never overlap ------------------------------------------------------------------------


def test_an_output_folder_inside_the_teacher_folder_is_refused(assets, tmp_path, capsys):
    teacher = assets / "teacher"
    before = sorted(os.listdir(teacher))
    for out in (teacher, teacher / "out"):
        code = run_cli(tmp_path, tiny_recipe(assets), out=out)
        expect_cli_error(capsys, code, r"--output-dir .* is inside teacher.source .*: the run would write into its")
    assert sorted(os.listdir(teacher)) == before


def test_an_output_folder_inside_a_dataset_folder_is_refused(assets, tmp_path, capsys):
    import shutil

    data = tmp_path / "dataset"
    data.mkdir()
    for split in ("train", "validation", "test"):
        shutil.copy(assets / f"{split}.csv", data / f"{split}.csv")
    raw = tiny_recipe(assets)
    raw["data"] = {"source": str(data), "max_length": 16}
    code = run_cli(tmp_path, raw, out=data / "out")
    expect_cli_error(capsys, code, r"--output-dir .* is inside data.source .*: the run would write into its")
    assert sorted(os.listdir(data)) == ["test.csv", "train.csv", "validation.csv"]


def test_an_input_inside_a_folder_the_run_replaces_is_refused(assets, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(tmp_path, tiny_recipe(assets), out=out) == 0
    raw = tiny_recipe(assets)
    raw["teacher"]["source"] = str(out / "00-int8")  # the teacher is the stage output this run would replace
    expect_cli_error(capsys, run_cli(tmp_path, raw, out=out), r"teacher.source .* lies in .*00-int8, which this run")
    raw = tiny_recipe(assets)
    data = out / "summary.json"
    raw["data"]["files"]["test"] = str(data)
    expect_cli_error(capsys, run_cli(tmp_path, raw, out=out), r"data.files.test .*summary.json.* which this run")


# ---- one run per output folder ---------------------------------------------------------------------------------


def test_a_second_run_on_a_locked_folder_exits_2_naming_the_holder(assets, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out):
        code = run_cli(tmp_path, tiny_recipe(assets), out=out)
        expect_cli_error(capsys, code, rf"is in use by another hf-compress run: pid {os.getpid()} on ")
    assert run_cli(tmp_path, tiny_recipe(assets), out=out) == 0  # released at the end of the block


def test_a_live_runs_half_written_folder_is_reported_as_busy_not_foreign(assets, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "00-int8").mkdir(parents=True)  # the holder is writing it: no stage marker yet
    (out / "00-int8" / "model.safetensors").write_text("partial")
    with output_lock(out):
        code = run_cli(tmp_path, tiny_recipe(assets), out=out)
        expect_cli_error(capsys, code, rf"is in use by another hf-compress run: pid {os.getpid()} on ")
    code = run_cli(tmp_path, tiny_recipe(assets), out=out)  # nobody holds it now: the folder is foreign
    expect_cli_error(capsys, code, r"00-int8 exists and was not written by hf-compress")


def test_a_lock_left_by_a_killed_run_is_recovered(assets, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from hf_compress.lock import output_lock\n"
         f"with output_lock(Path({str(out)!r})):\n    print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RecipeError, match=rf"pid {holder.pid} "):
            with output_lock(out):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
    assert (out / LOCK_NAME).exists()  # the file stays; the kernel released the lock with the process
    assert run_cli(tmp_path, tiny_recipe(assets), out=out) == 0


# ---- a failed write leaves nothing half-written and says what happened -------------------------------------


class _FailingModel:
    def __init__(self, error):
        self.error = error

    def save_pretrained(self, folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise self.error


@pytest.mark.parametrize(
    "error, kind, message",
    [
        (OSError(28, "No space left on device"), OSError, "No space left on the device writing the stage output"),
        (RuntimeError("Error while serializing: IoError(No space left on device (os error 28))"), OSError,
         "No space left on the device"),  # what safetensors raises on a full disk: not an OSError
        (PermissionError(13, "Permission denied"), PermissionError, r"make the folder writable"),
        (ValueError("a bug in save_pretrained"), ValueError, "a bug in save_pretrained"),
    ],
    ids=["enospc", "safetensors-full-disk", "read-only", "other"],
)  # fmt: skip
def test_a_failed_write_cleans_up_keeps_the_previous_output_and_names_the_cause(tmp_path, error, kind, message):
    target = tmp_path / "00-stage"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"previous")
    with pytest.raises(kind, match=message):
        runner.save_atomically(_FailingModel(error), None, target, {"README.md": "card"})
    assert (target / "model.safetensors").read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["00-stage"]  # no .tmp- / .old- folder left


def test_an_interrupted_write_cleans_up_and_keeps_the_previous_output(tmp_path):
    target = tmp_path / "00-stage"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt):
        runner.save_atomically(_FailingModel(KeyboardInterrupt()), None, target, {})
    assert (target / "model.safetensors").read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["00-stage"]


def test_dry_run_of_a_recipe_takes_no_lock_and_writes_nothing(assets, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(assets)))
    from hf_compress.cli import main

    assert main(["run", str(path), "--output-dir", str(tmp_path / "out"), "--dry-run"]) == 0
    assert not (tmp_path / "out").exists()
