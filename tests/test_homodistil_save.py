"""Every HomoDistil save path writes what the user means: the sliced, dense model once pruning has ended (save_model,
push_to_hub, args.push_to_hub, trainer.model), the full-size masked student only in Trainer checkpoints.

The Hub is patched at the HfApi boundary (create_repo / upload_folder, what transformers' Trainer calls): each
upload is copied at the moment it is made, so a test sees exactly what would have reached the repo."""

import json
import shutil
from concurrent.futures import Future
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from conftest import PRUNE_DEFAULTS, PRUNE_TARGETS, bert_config, text_dataset, train_args
from safetensors.torch import load_file
from transformers import BertForSequenceClassification

from hf_compress import HomoDistilConfig, HomoDistilTrainer
from hf_compress.prune.trainer import PRUNING_STATE_NAME

TARGETS = PRUNE_TARGETS
SLICED = (16, 2, 32)
FULL = (32, 4, 64)


def config(out, **kw):
    # magnitude importance: the saves are under test, not the ranking
    return train_args(HomoDistilConfig, out, **{"importance": "magnitude", **PRUNE_DEFAULTS, **kw})


def trainer_for(out, **kw):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config())
    return HomoDistilTrainer(
        teacher_model=teacher, args=config(out, **kw), train_dataset=text_dataset(64), eval_dataset=text_dataset(16, 1)
    )


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fake Hub: a list of uploads, each the copied folder, where it goes in the repo and its commit message."""
    uploads = []

    def create_repo(self, repo_id, **kwargs):
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, ignore_patterns=None, **kwargs):
        copy = tmp_path / "hub" / str(len(uploads))
        shutil.copytree(folder_path, copy, ignore=shutil.ignore_patterns(*(ignore_patterns or [])))
        uploads.append(SimpleNamespace(path=path_in_repo or "", folder=copy, message=kwargs["commit_message"]))
        if kwargs.get("run_as_future"):
            done = Future()
            done.set_result(None)
            return done
        return f"https://huggingface.co/{repo_id}"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return uploads


def widths(folder):
    saved = json.loads((folder / "config.json").read_text())
    return saved["hidden_size"], saved["num_attention_heads"], saved["intermediate_size"]


def assert_sliced_upload(upload, trainer):
    assert upload.path == ""  # the top level of the model repo
    assert widths(upload.folder) == SLICED
    tensors = load_file(upload.folder / "model.safetensors")
    assert tensors["bert.embeddings.word_embeddings.weight"].shape == (64, 16)
    assert tensors["bert.encoder.layer.0.attention.self.query.weight"].shape == (16, 16)
    assert tensors["bert.encoder.layer.0.intermediate.dense.weight"].shape == (32, 16)
    expected = {k: tuple(v.shape) for k, v in trainer.sliced_model().state_dict().items()}
    assert {k: tuple(v.shape) for k, v in tensors.items()}.items() <= expected.items()
    assert not (upload.folder / PRUNING_STATE_NAME).exists()
    assert (upload.folder / "training_args.json").is_file() and not (upload.folder / "training_args.bin").exists()
    assert not any(p.name.startswith("checkpoint-") for p in upload.folder.iterdir())


@pytest.mark.parametrize("arg_push", [True, False], ids=["args_push_to_hub", "push_only"])
def test_push_to_hub_uploads_the_sliced_model(tmp_path, hub, arg_push):
    trainer = trainer_for(str(tmp_path / "run"), push_to_hub=arg_push, hub_model_id="me/tiny", hub_strategy="end")
    trainer.train()
    assert hub == []  # hub_strategy="end": nothing during training
    trainer.push_to_hub()
    assert len(hub) == 1
    assert_sliced_upload(hub[0], trainer)
    reloaded = BertForSequenceClassification.from_pretrained(hub[0].folder).eval()
    batch = {"input_ids": torch.randint(1, 64, (2, 8))}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trainer.model.eval()(**batch).logits)


def test_save_model_with_args_push_to_hub_also_uploads_the_sliced_model(tmp_path, hub):
    trainer = trainer_for(str(tmp_path / "run"), push_to_hub=True, hub_model_id="me/tiny", hub_strategy="end")
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    assert widths(tmp_path / "saved") == SLICED
    assert len(hub) == 1 and hub[0].message == "Model save"
    assert_sliced_upload(hub[0], trainer)


@pytest.mark.parametrize("strategy", ["every_save", "checkpoint"])
def test_pushes_while_training_put_only_the_sliced_model_at_the_top_level(tmp_path, hub, strategy):
    trainer = trainer_for(
        str(tmp_path / "run"),
        push_to_hub=True,
        hub_model_id="me/tiny",
        hub_strategy=strategy,
        save_strategy="steps",
        save_steps=2,
    )
    trainer.train()
    top = [u for u in hub if u.path == ""]
    # Pruning reaches its targets at step 6: before that the repo's top level gets nothing.
    assert [u.message for u in top] == [f"Training in progress, step {s}" for s in (6, 8, 10)]
    for upload in top:
        assert_sliced_upload(upload, trainer)
    checkpoints = [u for u in hub if u.path]
    if strategy == "every_save":
        assert checkpoints == []
        return
    # The checkpoints, for exact resume: full-size masked student plus masks and scores.
    expected = [f"Training in progress, step {s}, checkpoint" for s in (2, 4, 6, 8, 10)]
    assert [u.message for u in checkpoints] == expected
    for upload in checkpoints:
        assert upload.path == "last-checkpoint"
        assert widths(upload.folder) == FULL
        assert (upload.folder / PRUNING_STATE_NAME).is_file()


def test_push_before_the_targets_is_an_error(tmp_path, hub):
    trainer = trainer_for(str(tmp_path / "run"), hub_model_id="me/tiny")
    with pytest.raises(RuntimeError, match="not pruned to its targets yet .*no sliced model to push"):
        trainer.push_to_hub()
    assert hub == []


def test_trainer_model_after_training_is_the_sliced_model(tmp_path):
    # Depth pruning, attention and embedding KD too: the evaluation of the sliced model must line up layers,
    # heads and channels with the masked student's.
    trainer = trainer_for(
        str(tmp_path / "run"),
        target_num_layers=3,
        attention_weight=1.0,
        embedding_weight=0.5,
        eval_strategy="steps",
        eval_steps=10,
    )
    trainer.train()
    masked = trainer.pruner.model
    assert trainer.model is not masked and trainer.model_wrapped is trainer.model
    config = trainer.model.config
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == SLICED
    assert config.num_hidden_layers == 3
    trainer.model.save_pretrained(tmp_path / "saved")
    assert widths(tmp_path / "saved") == SLICED
    # evaluate(): the distillation loss of the sliced model equals the masked student's at the last step.
    during = next(e for e in trainer.state.log_history if "eval_loss" in e and e["step"] == 10)
    after = trainer.evaluate()
    for key in ("eval_loss", "eval_kd_loss", "eval_hidden_loss", "eval_attention_loss", "eval_embedding_loss"):
        assert after[key] == pytest.approx(during[key], rel=1e-4, abs=1e-6), key
    # predict(): the sliced model's logits are the masked student's.
    data = text_dataset(16, 1)
    predictions = trainer.predict(data).predictions
    batch = {k: torch.tensor(data[k]) for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        expected = masked.eval()(**batch).logits
    torch.testing.assert_close(torch.tensor(predictions), expected, rtol=1e-4, atol=1e-5)


def test_training_again_after_pruning_is_refused(tmp_path):
    trainer = trainer_for(str(tmp_path / "run"))
    trainer.train()
    with pytest.raises(RuntimeError, match="has finished pruning and trainer.model is now the sliced model"):
        trainer.train()


def test_stopped_before_the_targets_keeps_the_masked_model(tmp_path, caplog):
    import logging

    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step == 4

    trainer = trainer_for(str(tmp_path / "run"))
    trainer.add_callback(StopAt())
    with caplog.at_level(logging.WARNING, logger="hf_compress.prune.trainer"):
        trainer.train()
    assert not trainer.pruner.finished and trainer.model is trainer.pruner.model
    assert "before pruning reached its targets" in caplog.text and "would save unpruned" in caplog.text
    with pytest.raises(RuntimeError, match="not pruned to its targets yet .*no sliced model to save"):
        trainer.save_model(str(tmp_path / "x"))
