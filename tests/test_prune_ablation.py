"""`python -m benchmarks prune --ablation`: every variant is a valid HomoDistil run, and the report renders."""

import pytest
import torch
from conftest import bert_config, text_dataset
from test_prune import TARGETS, config
from transformers import BertForSequenceClassification

from benchmarks import prune, prune_ablation
from hf_compress import HomoDistilTrainer


@pytest.mark.parametrize("key", sorted(prune_ablation.ABLATIONS))
def test_every_ablation_variant_trains_a_tiny_model(tmp_path, key):
    settings = prune_ablation.ablation_settings(key, steps=6, kind="text")
    assert settings["target_hidden_size"] == prune.SHAPES["text"]["target_hidden_size"]
    changes = {k: v for k, v in settings.items() if k not in prune.SHAPES["text"]}
    changes.update(TARGETS)  # the tiny model's shape instead of MiniLM's
    torch.manual_seed(0)
    args = config(str(tmp_path), **{**changes, "max_steps": 6, "fisher_samples": 4})
    trainer = HomoDistilTrainer(
        teacher_model=BertForSequenceClassification(bert_config()), args=args, train_dataset=text_dataset(48)
    )
    assert trainer.pruner.scorer.name == settings.get("importance", "platon")
    trainer.train()
    assert trainer.pruner.finished
    if key == "no_recovery":
        assert args.prune_end_step == 6
    if key == "early_end":  # 30 % of 6 steps
        assert args.prune_end_step == 1


def test_unknown_ablation_variant_is_an_error():
    with pytest.raises(SystemExit, match="Unknown ablation variant 'bogus'; choose from"):
        prune_ablation.ablation_settings("bogus", 10, "text")


def test_ablation_report_renders_every_row():
    rows = [
        dict(model="teacher", variant="", accuracy=0.8, pct_teacher=100.0, steps=0, compress_s=0.0),
        dict(model=prune_ablation.ABLATIONS["base"][0], variant="base", accuracy=0.76, pct_teacher=95.0, steps=10,
             compress_s=3.0),
    ]  # fmt: skip
    payload = {"kind": "text", "ablation": True, "rows": rows, "steps": 10, "prune_end_step": 6,
               "shape": prune.SHAPES["text"]}  # fmt: skip
    text = prune.report(payload)
    assert "Ablation (text)" in text and "base: KD + hidden KD" in text and "95" in text


def test_prune_report_states_the_objective():
    row = dict(model="teacher", accuracy=0.8, pct_teacher=100.0, params_m=1.0, size_mb=1.0, lat_8x128=1.0,
               lat_1x128=1.0, speedup_8x128=1.0, peak_mb=1.0, compress_s=0.0, shape="384 / 12 / 1536")  # fmt: skip
    payload = {"kind": "text", "rows": [row], "steps": 10, "prune_end_step": 6, "shape": prune.SHAPES["text"],
               "objective": "KD + hidden KD (+ attention KD for the HomoDistilTrainer rows)"}  # fmt: skip
    assert "objective: KD + hidden KD (+ attention KD" in prune.report(payload)
    assert prune.HOMODISTIL_ATTENTION["attention_weight"] > 0
