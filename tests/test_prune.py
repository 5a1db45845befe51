import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import PRUNE_DEFAULTS, PRUNE_TARGETS, bert_config, image_dataset, text_dataset, train_args, vit_config
from transformers import (
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    TrainerCallback,
    ViTForImageClassification,
)

from hf_compress import HomoDistilConfig, HomoDistilTrainer, slice_model
from hf_compress.models.structure import model_structure
from hf_compress.prune.masks import MaskHooks, StructureMasks, keep_top
from hf_compress.prune.schedule import cubic_schedule, oneshot_schedule
from hf_compress.prune.scorers.magnitude import MagnitudeScores
from hf_compress.prune.scores import platon_update, structure_scores
from hf_compress.prune.trainer import PRUNING_STATE_NAME

TARGETS = PRUNE_TARGETS


def config(out, **kw):
    return train_args(HomoDistilConfig, out, **{**PRUNE_DEFAULTS, **kw})


# ---- schedule ------------------------------------------------------------------------------------------


def test_cubic_schedule_is_cubic_monotone_and_hits_the_target():
    values = [cubic_schedule(t, 10, 110, 768, 192) for t in range(0, 130)]
    assert values[:11] == [768] * 11
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[110] == 192 and values[-1] == 192 and values[100] > 192
    # cubic: half-way through, (1/2)^3 of the removable width remains
    assert values[60] == 192 + round(576 * 0.5**3)


def test_cubic_schedule_needs_an_end_after_the_start():
    with pytest.raises(ValueError, match="prune_end_step > prune_start_step"):
        cubic_schedule(5, 10, 10, 8, 4)


def test_oneshot_schedule():
    assert [oneshot_schedule(t, 3, 8, 2) for t in range(5)] == [8, 8, 8, 2, 2]


# ---- scores --------------------------------------------------------------------------------------------


def test_platon_update_matches_hand_computation():
    w, g1, g2 = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 3.0]), torch.tensor([-1.0, 0.0])
    b1, b2 = 0.85, 0.95
    i1 = (1 - b1) * torch.tensor([1.0, 3.0])  # |w*g1| = [1, 3]
    u1 = (1 - b2) * (torch.tensor([1.0, 3.0]) - i1).abs()
    i_bar, u_bar = platon_update(torch.zeros(2), torch.zeros(2), w, g1, b1, b2)
    torch.testing.assert_close(i_bar, i1)
    torch.testing.assert_close(u_bar, u1)
    i2 = b1 * i1 + (1 - b1) * torch.tensor([2.0, 0.0])  # |w*g2| = [2, 0]
    u2 = b2 * u1 + (1 - b2) * (torch.tensor([2.0, 0.0]) - i2).abs()
    i_bar, u_bar = platon_update(i_bar, u_bar, w, g2, b1, b2)
    torch.testing.assert_close(i_bar, i2)
    torch.testing.assert_close(u_bar, u2)


def test_structure_scores_sum_the_weights_of_each_structure():
    torch.manual_seed(0)
    model = BertModel(bert_config(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, intermediate_size=4))
    structure = model_structure(model)
    scores = MagnitudeScores(model)
    got = structure_scores(structure, scores)
    layer = model.encoder.layer[0]
    q, k, v = (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value)
    o = layer.attention.output.dense
    head1 = sum(m.weight[4:8].abs().sum() + m.bias[4:8].abs().sum() for m in (q, k, v)) + o.weight[:, 4:8].abs().sum()
    assert got["heads"][0, 1].item() == pytest.approx(head1.item(), rel=1e-5)
    fi, fo = layer.intermediate.dense, layer.output.dense
    neuron2 = fi.weight[2].abs().sum() + fi.bias[2].abs() + fo.weight[:, 2].abs().sum()
    assert got["ffn"][0, 2].item() == pytest.approx(neuron2.item(), rel=1e-5)
    emb = model.embeddings
    channel3 = (
        emb.word_embeddings.weight[:, 3].abs().sum()
        + emb.position_embeddings.weight[:, 3].abs().sum()
        + emb.token_type_embeddings.weight[:, 3].abs().sum()
        + emb.LayerNorm.weight[3].abs() + emb.LayerNorm.bias[3].abs()
        + sum(m.weight[:, 3].abs().sum() for m in (q, k, v, fi, model.pooler.dense))
        + sum(m.weight[3].abs().sum() + m.bias[3].abs() for m in (o, fo, model.pooler.dense))
        + sum(n.weight[3].abs() + n.bias[3].abs() for n in (layer.attention.output.LayerNorm, layer.output.LayerNorm))
    )  # fmt: skip
    assert got["hidden"][3].item() == pytest.approx(channel3.item(), rel=1e-5)


def test_keep_top_is_monotone():
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
    new = keep_top(torch.tensor([1.0, 100.0, 3.0, 2.0]), mask, 2)
    assert new.tolist() == [0.0, 0.0, 1.0, 1.0]  # the pruned entry never comes back, however high its score


# ---- masked forward == sliced model ---------------------------------------------------------------------


MODELS = {
    "bert_cls": (lambda: BertForSequenceClassification(bert_config()), "text"),
    "bert_mlm": (lambda: BertForMaskedLM(bert_config()), "text"),
    "bert_bare": (lambda: BertModel(bert_config()), "text"),
    "vit_cls": (lambda: ViTForImageClassification(vit_config()), "vision"),
}


def _inputs(kind):
    if kind == "vision":
        return {"pixel_values": torch.randn(3, 1, 16, 16)}
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0
    return {"input_ids": torch.randint(1, 64, (3, 9)), "attention_mask": mask}


def _random_masks(structure):
    masks = StructureMasks.full(structure)
    masks.load_state_dict(
        {
            "hidden": keep_top(torch.randn(32), masks.hidden, 16),
            "heads": keep_top(torch.randn(4, 4), masks.heads, 2),
            "ffn": keep_top(torch.randn(4, 64), masks.ffn, 40),
        }
    )
    return masks


def _main_output(out, hidden_mask=None):
    if hasattr(out, "logits"):
        return out.logits
    last = out.last_hidden_state
    return last[..., hidden_mask.bool()] if hidden_mask is not None else last


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sliced_model_equals_masked_model(name):
    torch.manual_seed(0)
    build, kind = MODELS[name]
    model = build().eval()
    structure = model_structure(model)
    masks = _random_masks(structure)
    inputs = _inputs(kind)
    hooks = MaskHooks(structure, masks, hidden=True, heads=True, ffn=True)
    masked = _main_output(model(**inputs), masks.hidden)
    hooks.remove()
    sliced = slice_model(model, masks).eval()
    assert (sliced.config.hidden_size, sliced.config.num_attention_heads, sliced.config.intermediate_size) == (
        16,
        2,
        40,
    )
    assert type(sliced) is type(model)
    torch.testing.assert_close(_main_output(sliced(**inputs)), masked, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in sliced.parameters()) < sum(p.numel() for p in model.parameters())


def test_hidden_mask_is_shared_by_embeddings_layers_and_layer_norms(tmp_path):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config())
    trainer = HomoDistilTrainer(teacher_model=teacher, args=config(str(tmp_path)), train_dataset=text_dataset(64))
    trainer.train()
    pruner = trainer.pruner
    assert pruner.finished and pruner.masks.counts() == {"hidden": 16, "heads": 2, "ffn": 32, "layers": 4}
    student = trainer.pruner.model.eval()  # the masked model (trainer.model is sliced after train)
    batch = text_dataset(4, seed=5)[:4]
    out = student(
        input_ids=torch.tensor(batch["input_ids"]),
        attention_mask=torch.tensor(batch["attention_mask"]),
        output_hidden_states=True,
    )
    pruned = pruner.masks.hidden == 0
    for states in out.hidden_states:  # embedding output and every layer output
        assert states[..., pruned].abs().max() == 0
    assert (pruner.masks.heads.sum(1) == 2).all() and (pruner.masks.ffn.sum(1) == 32).all()


# ---- trainer -------------------------------------------------------------------------------------------


LOAD_AND_RUN = """
import sys, json, torch
from transformers import {auto}
model = {auto}.from_pretrained(sys.argv[1]).eval()
inputs = {{k: torch.tensor(v) for k, v in json.load(open(sys.argv[2])).items()}}
with torch.no_grad():
    print(json.dumps({{"modules": sorted(m for m in sys.modules if m.startswith("hf_compress")),
                      "logits": model(**inputs).logits.tolist()}}))
"""


@pytest.mark.parametrize("kind", ["text", "vision"])
def test_saved_model_loads_without_hf_compress_and_matches(tmp_path, kind):
    torch.manual_seed(0)
    if kind == "text":
        teacher, data, auto = (
            BertForSequenceClassification(bert_config()),
            text_dataset(64),
            "AutoModelForSequenceClassification",
        )
    else:
        teacher, data, auto = (
            ViTForImageClassification(vit_config()),
            image_dataset(64),
            "AutoModelForImageClassification",
        )
    trainer = HomoDistilTrainer(teacher_model=teacher, args=config(str(tmp_path / "run")), train_dataset=data)
    trainer.train()
    out = str(tmp_path / "saved")
    trainer.save_model(out)
    saved = json.load(open(os.path.join(out, "config.json")))
    assert (saved["hidden_size"], saved["num_attention_heads"], saved["intermediate_size"]) == (16, 2, 32)
    inputs = _inputs(kind)
    with torch.no_grad():
        expected = trainer.model.eval()(**inputs).logits
    (tmp_path / "inputs.json").write_text(json.dumps({k: v.tolist() for k, v in inputs.items()}))
    script = tmp_path / "load.py"
    script.write_text(LOAD_AND_RUN.format(auto=auto))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, str(script), out, str(tmp_path / "inputs.json")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["modules"] == []
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("granularity", ["weight", "structure"])
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, granularity):
    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 4:
                control.should_training_stop = True

    def run(out, resume=None, callbacks=None):
        torch.manual_seed(0)
        teacher = BertForSequenceClassification(bert_config())
        args = config(out, save_strategy="steps", save_steps=4, prune_every=1, importance_granularity=granularity)
        trainer = HomoDistilTrainer(
            teacher_model=teacher, args=args, train_dataset=text_dataset(64), callbacks=callbacks
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run(str(tmp_path / "a"))
    interrupted = run(str(tmp_path / "b"), callbacks=[StopAt()])
    assert not interrupted.pruner.finished  # stopped mid-pruning
    checkpoint = tmp_path / "b" / "checkpoint-4"
    assert (checkpoint / PRUNING_STATE_NAME).is_file()
    resumed = run(str(tmp_path / "b"), resume=str(checkpoint))
    for key in ("hidden", "heads", "ffn"):
        assert torch.equal(getattr(resumed.pruner.masks, key), getattr(straight.pruner.masks, key))
    for key, value in straight.pruner.scores.state_dict().items():
        torch.testing.assert_close(resumed.pruner.scores.state_dict()[key], value)
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)


@pytest.mark.parametrize(
    "settings",
    [
        dict(importance="taylor"),
        dict(importance="magnitude"),
        dict(pruning_schedule="oneshot", importance="magnitude"),
        dict(pruning_schedule="oneshot", importance="taylor", prune_start_step=2),
        dict(importance_granularity="structure"),
        dict(importance_granularity="structure", importance="taylor", importance_window=2),
    ],
    ids=["taylor", "magnitude", "oneshot_magnitude", "oneshot_taylor", "structure", "structure_taylor_window"],
)
def test_baselines_reach_the_targets(tmp_path, settings):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config())
    trainer = HomoDistilTrainer(
        teacher_model=teacher, args=config(str(tmp_path), **settings), train_dataset=text_dataset(64)
    )
    trainer.train()
    assert trainer.pruner.finished
    if settings.get("pruning_schedule") == "oneshot":
        assert trainer.pruner.kept_at(settings.get("prune_start_step", 0)) == trainer.pruner.targets


def test_task_agnostic_pruning_of_a_bare_encoder(tmp_path):
    torch.manual_seed(0)
    teacher = BertModel(bert_config())
    data = text_dataset(64).remove_columns("labels")
    args = config(str(tmp_path), kd_weight=0, hidden_weight=1.0, attention_weight=1.0)
    trainer = HomoDistilTrainer(teacher_model=teacher, args=args, train_dataset=data)
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = BertModel.from_pretrained(str(tmp_path / "saved"))
    assert reloaded.config.hidden_size == 16


def test_pruning_lowers_the_loss_after_the_final_mask(tmp_path):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config())
    args = config(str(tmp_path), max_steps=40, prune_end_step=10, logging_steps=1)
    trainer = HomoDistilTrainer(teacher_model=teacher, args=args, train_dataset=text_dataset(64))
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert np.mean(losses[-5:]) < np.mean(losses[10:15])


# ---- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(target_hidden_size=None, target_num_heads=None, target_intermediate_size=None),
            "at least one pruning target",
        ),
        (dict(target_hidden_size=0), "target_hidden_size must be a positive integer"),
        (dict(prune_end_step=None), "cubic schedule needs prune_end_step > prune_start_step"),
        (dict(prune_start_step=5, prune_end_step=5), "cubic schedule needs prune_end_step > prune_start_step"),
        (dict(prune_every=0), "prune_every must be >= 1"),
        (dict(importance="bogus"), r"importance='bogus' is not a registered importance scorer; choose one of \['"),
        (dict(pruning_schedule="linear"), "pruning_schedule='linear' is not supported"),
        (dict(pruning_schedule="oneshot", importance="platon"), "needs gradients from a few steps first"),
        (dict(importance_beta1=1.0), r"importance_beta1 must be in \[0, 1\)"),
    ],
)
def test_config_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        config(str(tmp_path), **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(target_hidden_size=16, target_num_heads=3),
            "does not load with a stock config.*Use 2 heads for hidden size 16",
        ),
        (dict(target_hidden_size=24, target_num_heads=None), "hidden size 24 and 4 heads does not load"),
        (dict(target_num_heads=8), "target_num_heads=8 is larger than the model's 4"),
        (dict(target_intermediate_size=100), "target_intermediate_size=100 is larger than the model's 64"),
    ],
)
def test_impossible_targets_are_rejected(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        HomoDistilTrainer(
            teacher_model=BertForSequenceClassification(bert_config()), args=config(str(tmp_path), **kwargs)
        )


def test_schedule_longer_than_training_is_an_error(tmp_path):
    trainer = HomoDistilTrainer(
        teacher_model=BertForSequenceClassification(bert_config()),
        args=config(str(tmp_path), max_steps=4, prune_end_step=6),
        train_dataset=text_dataset(32),
    )
    with pytest.raises(
        ValueError,
        match=r"reaches its targets at step 6 \(prune_end_step / prune_start_step\) but training stops at step 4",
    ):
        trainer.train()


def test_saving_before_the_targets_is_an_error(tmp_path):
    trainer = HomoDistilTrainer(teacher_model=BertForSequenceClassification(bert_config()), args=config(str(tmp_path)))
    with pytest.raises(RuntimeError, match="not pruned to its targets yet"):
        trainer.save_model(str(tmp_path / "x"))


def test_unsupported_architecture(tmp_path):
    from transformers import (
        AlbertConfig,
        AlbertForSequenceClassification,
        FunnelConfig,
        FunnelForSequenceClassification,
    )

    albert = AlbertForSequenceClassification(
        AlbertConfig(vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64)
    )  # fmt: skip
    with pytest.raises(NotImplementedError, match="Structured pruning of AlbertForSequenceClassification is not su"):
        HomoDistilTrainer(teacher_model=albert, args=config(str(tmp_path)))
    funnel = FunnelForSequenceClassification(
        FunnelConfig(vocab_size=64, block_sizes=[1], d_model=32, n_head=4, d_head=8, d_inner=64)
    )
    with pytest.raises(NotImplementedError, match="does not know the layout of model type 'funnel'"):
        HomoDistilTrainer(teacher_model=funnel, args=config(str(tmp_path)))


def test_needs_homodistil_config(tmp_path):
    from hf_compress import DistillationConfig

    with pytest.raises(TypeError, match="needs args=HomoDistilConfig"):
        HomoDistilTrainer(teacher_model=BertModel(bert_config()), args=DistillationConfig(output_dir=str(tmp_path)))


def test_student_copied_from_an_already_frozen_teacher_trains(tmp_path):
    teacher = BertForSequenceClassification(bert_config())
    teacher.requires_grad_(False)  # e.g. frozen by an earlier trainer
    trainer = HomoDistilTrainer(teacher_model=teacher, args=config(str(tmp_path)), train_dataset=text_dataset(32))
    assert all(p.requires_grad for p in trainer.model.parameters())


def test_frozen_student_is_an_error(tmp_path):
    student = BertForSequenceClassification(bert_config())
    student.bert.embeddings.requires_grad_(False)
    with pytest.raises(ValueError, match="The student has frozen parameters"):
        HomoDistilTrainer(
            model=student, teacher_model=BertForSequenceClassification(bert_config()), args=config(str(tmp_path))
        )
