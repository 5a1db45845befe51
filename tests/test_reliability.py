"""Multi-process runs, kill -9 then resume, no pickles, and the remaining bad-input cases."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import bert_config, text_dataset
from safetensors.torch import load_file
from transformers import BertForSequenceClassification

from hf_compress import DistillationConfig, DistillationTrainer

SCRIPT = Path(__file__).resolve().parent / "scripts" / "train_tiny.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}


def run_tiny(out, mode, processes=1, batch=8, accumulation=1, extra=()):
    launcher = [sys.executable]
    if processes > 1:  # accelerate's launcher spawns the processes; use_cpu=True makes them talk over gloo
        launcher = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ]
    command = [
        *launcher,
        str(SCRIPT),
        "--mode",
        mode,
        "--out",
        str(out),
        "--batch",
        str(batch),
        "--accumulation",
        str(accumulation),
        *extra,
    ]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The 1-process reference runs (global batch 8), shared by the tests below."""
    root = tmp_path_factory.mktemp("single")
    for mode in ("distill", "homodistil"):
        result = run_tiny(root / mode, mode)
        assert result.returncode == 0, result.stderr[-3000:]
    return root


def _assert_same_weights(a, b, atol=1e-5):
    wa, wb = load_file(str(a / "final.safetensors")), load_file(str(b / "final.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=1e-4)


@pytest.mark.parametrize("mode, batch, accumulation", [("distill", 4, 1), ("homodistil", 2, 2)])
def test_two_processes_match_one_process_at_the_same_global_batch(single, tmp_path, mode, batch, accumulation):
    result = run_tiny(tmp_path / mode, mode, processes=2, batch=batch, accumulation=accumulation)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / mode / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(info["world_size"] == 2 for info in ranks)
    if mode == "distill":  # the student is narrower: its projections are DDP-wrapped (and synchronised)
        assert all(info["projections_ddp"] for info in ranks)
    else:  # pruning masks are identical on every rank, and equal to the 1-process masks
        assert ranks[0]["masks"] == ranks[1]["masks"]
        assert ranks[0]["masks"] == json.loads((single / mode / "rank0.json").read_text())["masks"]
    _assert_same_weights(single / mode, tmp_path / mode)


def test_kill_9_mid_pruning_then_resume_matches_an_uninterrupted_run(single, tmp_path):
    out = tmp_path / "killed"
    killed = run_tiny(out, "homodistil", extra=("--kill-at", "5"))
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "final.safetensors").exists() and (out / "checkpoint-4").is_dir()
    resumed = run_tiny(out, "homodistil", extra=("--resume",))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_weights(single / "homodistil", out, atol=1e-6)
    assert (
        json.loads((out / "rank0.json").read_text())["masks"]
        == json.loads((single / "homodistil" / "rank0.json").read_text())["masks"]
    )


def test_checkpoints_and_saved_models_hold_no_training_args_pickle(single):
    folder = single / "distill"
    checkpoint = folder / "checkpoint-8"
    assert (checkpoint / "training_args.json").is_file() and not (checkpoint / "training_args.bin").exists()
    assert json.loads((checkpoint / "training_args.json").read_text())["hidden_weight"] == 1.0


def _tiny_trainer(tmp_path, **kw):
    torch.manual_seed(0)
    args = DistillationConfig(output_dir=str(tmp_path), max_steps=2, report_to=[], use_cpu=True, **kw)
    teacher, student = BertForSequenceClassification(bert_config()), BertForSequenceClassification(bert_config())
    return teacher, student, args


def test_labels_out_of_range(tmp_path):
    teacher, student, args = _tiny_trainer(tmp_path, hard_label_weight=1.0)
    data = text_dataset(16, num_labels=5)  # the models predict 3 classes
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    with pytest.raises(ValueError, match=r"Labels out of range at step 0: found 0..4 but the student predicts 3"):
        trainer.train()


def test_attention_kd_on_a_model_that_cannot_return_attentions(tmp_path, monkeypatch):
    teacher, student, args = _tiny_trainer(tmp_path, attention_weight=1.0)

    def refuse(*a, **k):
        raise ValueError("this model only supports flash attention")

    monkeypatch.setattr(student, "set_attn_implementation", refuse)
    with pytest.raises(
        ValueError, match="attention_weight > 0 needs the student's attention maps.*attention_weight=0"
    ):
        DistillationTrainer(model=student, teacher_model=teacher, args=args)


def test_truncated_checkpoint_state_file(tmp_path):
    from hf_compress.distill.projection_training import PROJECTIONS_NAME

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config())
    student = BertForSequenceClassification(bert_config(hidden_size=16, num_attention_heads=2))
    args = DistillationConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        save_steps=2,
        save_strategy="steps",
        report_to=[],
        use_cpu=True,
        hidden_weight=1.0,
    )
    DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset(16)).train()
    state = tmp_path / "checkpoint-2" / PROJECTIONS_NAME
    state.write_bytes(state.read_bytes()[:50])
    args = DistillationConfig(output_dir=str(tmp_path), max_steps=4, report_to=[], use_cpu=True, hidden_weight=1.0)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset(16))
    with pytest.raises(ValueError, match="is truncated or corrupt.*Resume from an earlier checkpoint"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


def test_truncated_quantized_weights_fail_to_load(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from hf_compress import QuantizationConfig, quantize

    torch.manual_seed(0)
    quantize(BertForSequenceClassification(bert_config()).eval(), QuantizationConfig()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(Exception, match="(?i)safetensor|deserializ|incomplete|header|truncat"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_recipe_data_without_the_label_column(tmp_path):
    import csv

    from hf_compress.recipes import parse_recipe
    from hf_compress.runner import run_recipe

    teacher = tmp_path / "teacher"
    torch.manual_seed(0)
    BertForSequenceClassification(bert_config(num_labels=2, vocab_size=6)).save_pretrained(teacher)
    from transformers import BertTokenizerFast

    BertTokenizerFast(
        vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"])}
    ).save_pretrained(teacher)
    for split in ("train", "validation"):
        with open(tmp_path / f"{split}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([["sentence", "target"], ["a a", 1], ["a", 0]])
    recipe = parse_recipe(
        {
            "teacher": {"source": str(teacher)},
            "data": {
                "source": "files",
                "files": {s: str(tmp_path / f"{s}.csv") for s in ("train", "validation")},
                "test_split": None,
            },
            "stages": [{"method": "quantize"}],
        }
    )
    with pytest.raises(
        ValueError, match=r"data is missing column\(s\) \['label', 'text'\]; it has \['sentence', 'target'\]"
    ):
        run_recipe(recipe, tmp_path / "out")


KILL_SCRIPT = Path(__file__).resolve().parent / "scripts" / "run_recipe_killed.py"
KILL_STAGES = {
    "finetune": {"method": "finetune"},
    "distill": {"method": "distill", "student_layers": [0, 2], "hidden_weight": 1.0},
    "homodistil": {"method": "homodistil", "target_hidden_size": 16, "target_num_heads": 2,
                   "target_intermediate_size": 32, "prune_end_step": 10, "prune_every": 2},
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(KILL_STAGES))
def test_kill_9_at_a_random_step_of_a_recipe_stage_then_rerun_matches_an_uninterrupted_run(
    tmp_path, kind, monkeypatch
):
    """Default recipe settings (checkpoints every 10% of the steps): kill -9 the CLI at a random step of the
    stage, run the same command again, and get the weights of an uninterrupted run."""
    import random

    import yaml
    from tiny_assets import make_assets, tiny_recipe

    import hf_compress.stages.training as training
    from hf_compress.recipes import load_recipe
    from hf_compress.runner import run_recipe

    steps = 20
    kill_at = random.Random(f"kill-{kind}").randrange(1, steps)  # seeded: the same step on every run
    assets = make_assets(tmp_path / "assets")
    stage = {"name": kind, **KILL_STAGES[kind], "max_steps": steps, "per_device_train_batch_size": 8, "use_cpu": True}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(assets, stage)))
    killed = subprocess.run(
        [sys.executable, str(KILL_SCRIPT), str(recipe), "--output-dir", str(tmp_path / "killed"),
         "--kill-at", str(kill_at)],
        env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    work = tmp_path / "killed" / f".work-00-{kind}"
    assert not (tmp_path / "killed" / f"00-{kind}").exists()
    assert any(p.name.startswith("checkpoint-") for p in work.iterdir()) == (kill_at > 2), f"killed at {kill_at}"
    found = []
    real_last = training.last_complete_checkpoint
    monkeypatch.setattr(training, "last_complete_checkpoint", lambda w: found.append(real_last(w)) or found[-1])
    run_recipe(load_recipe(recipe), tmp_path / "killed")  # the same command again: resumes
    last_saved = (kill_at - 1) // 2 * 2  # saved every 2 of the 20 steps, after the step the kill comes at
    expected = f"checkpoint-{last_saved}" if last_saved else None
    assert (Path(found[0]).name if found[0] else None) == expected, f"killed at {kill_at}, resumed from {found}"
    run_recipe(load_recipe(recipe), tmp_path / "reference")  # uninterrupted
    resumed = load_file(str(tmp_path / "killed" / f"00-{kind}" / "model.safetensors"))
    reference = load_file(str(tmp_path / "reference" / f"00-{kind}" / "model.safetensors"))
    assert resumed.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(
            resumed[key], reference[key], atol=1e-6, rtol=1e-5, msg=f"{key} (killed at {kill_at})"
        )
    assert not work.exists()
