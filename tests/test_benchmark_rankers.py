"""benchmarks/rankers.py: the mixed PLATON / magnitude probes go through the product's scorer registry, and kept
sets compare as they should. (The product scorers, Fisher / activation / random included: tests/test_scorers.py.)"""

import copy

import torch
from conftest import bert_config, text_dataset
from test_prune import TARGETS, config
from transformers import BertForSequenceClassification

from benchmarks import prune_ablation, rankers
from hf_compress import HomoDistilTrainer
from hf_compress.prune.masks import StructureMasks
from hf_compress.prune.scorers import scorer_names
from hf_compress.prune.scorers.magnitude import MagnitudeScores


def _trainer(tmp_path, **kw):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config())
    return HomoDistilTrainer(
        teacher_model=teacher, args=config(str(tmp_path), **TARGETS, **kw), train_dataset=text_dataset(48)
    )


def test_mixed_scores_take_magnitude_only_for_the_named_kinds(tmp_path):
    assert set(rankers.MIXED) <= set(scorer_names())
    trainer = _trainer(tmp_path, importance="magnitude_hidden")
    pruner = trainer.pruner
    own = pruner.scores.own
    own.i_bar = {k: torch.rand_like(v) for k, v in own.i_bar.items()}
    own.u_bar = {k: torch.rand_like(v) for k, v in own.u_bar.items()}
    mixed = pruner.scores.structure_scores()
    magnitude = MagnitudeScores(pruner.model).structure_scores(pruner.structure)
    platon = own.structure_scores(pruner.structure)
    torch.testing.assert_close(mixed["hidden"], magnitude["hidden"])
    torch.testing.assert_close(mixed["ffn"], platon["ffn"])
    torch.testing.assert_close(mixed["heads"], platon["heads"])
    assert pruner.scores.update() is True  # the own scores still fold in gradients
    assert pruner.scores.state_dict().keys() == own.state_dict().keys()


def test_mixed_scores_drive_a_run_and_survive_a_copy(tmp_path):
    trainer = _trainer(tmp_path, importance="magnitude_heads_ffn", max_steps=6, prune_end_step=4, prune_every=1)
    clone = copy.copy(trainer.pruner.scores)
    assert clone.magnitude_kinds == ("heads", "ffn") and clone.first_signal is None
    trainer.train()
    assert trainer.pruner.finished
    assert trainer.sliced_model().config.hidden_size == TARGETS["target_hidden_size"]


def test_kept_overlap_and_the_one_shot_reference(tmp_path):
    trainer = _trainer(tmp_path, pruning_schedule="oneshot", importance="magnitude")
    reference = prune_ablation.magnitude_masks(trainer.model, TARGETS)
    trainer.pruner.step(0)  # what the one-shot row keeps: the reference must be exactly that
    for kind in ("hidden", "heads", "ffn"):
        torch.testing.assert_close(getattr(reference, kind), getattr(trainer.pruner.masks, kind))
    assert reference.counts()["hidden"] == 16 and reference.counts()["heads"] == 2
    assert rankers.kept_overlap(reference, reference) == {"hidden": 1.0, "heads": 1.0, "ffn": 1.0}
    other = StructureMasks(hidden=1 - reference.hidden, heads=1 - reference.heads, ffn=1 - reference.ffn)
    assert rankers.kept_overlap(other, reference) == {"hidden": 0.0, "heads": 0.0, "ffn": 0.0}
