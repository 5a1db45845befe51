"""benchmarks/rankers.py: the rankings the vision ablation compares with PLATON score what they say they score."""

import pytest
import torch
from conftest import bert_config, text_dataset
from test_prune import TARGETS, config
from transformers import BertForSequenceClassification

from benchmarks import prune_ablation, rankers
from hf_compress import HomoDistilTrainer
from hf_compress.prune.masks import StructureMasks
from hf_compress.prune.scores import ImportanceScores


def _trainer(tmp_path, initializer_range=0.02, **kw):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config(initializer_range=initializer_range))
    return HomoDistilTrainer(
        teacher_model=teacher, args=config(str(tmp_path), **TARGETS, **kw), train_dataset=text_dataset(48)
    )


def test_fisher_scores_every_kind_and_zero_for_a_structure_without_effect(tmp_path):
    trainer = _trainer(tmp_path)
    pruner = trainer.pruner
    with torch.no_grad():  # FFN neuron 5 of layer 1 writes nothing: removing it changes no output
        pruner.structure.layers[1].ffn_out.weight[:, 5] = 0.0
    ranker = rankers.FisherRanker(pruner, text_dataset(8), samples=8)
    pruner.model.train()
    scores = ranker.structure_scores()
    assert scores["ffn"][1, 5] == 0.0
    for kind in ("hidden", "heads", "ffn"):
        assert torch.isfinite(scores[kind]).all() and (scores[kind] > 0).sum() > scores[kind].numel() // 2
    # It leaves the training state as it was: no parameter gradients, masks not trainable, training mode.
    assert all(p.grad is None for p in pruner.model.parameters())
    assert not any(m.requires_grad for m in (pruner.masks.hidden, pruner.masks.heads, pruner.masks.ffn))
    assert pruner.model.training
    assert ranker.position == 8  # the next event scores the next examples


def test_fisher_is_the_squared_mask_gradient_of_the_sampled_log_likelihood(tmp_path):
    trainer = _trainer(tmp_path, initializer_range=0.3)  # confident logits: gradients well above rounding
    pruner = trainer.pruner
    model = pruner.model.double()  # float64, so that central differences are exact enough to compare
    data = text_dataset(1)
    scores = rankers.FisherRanker(pruner, data, samples=1, seed=3).structure_scores()
    # Recompute independently: the same sampled label (same generator), gradient by central differences.
    model.eval()
    batch = {k: torch.tensor([data[0][k]]) for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        probs = model(**batch).logits.float().softmax(-1)
    label = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(3)).item()
    for kind in ("ffn", "heads", "hidden"):
        mask = getattr(pruner.masks, kind)
        index = divmod(int(scores[kind].argmax()), mask.shape[-1]) if mask.dim() == 2 else int(scores[kind].argmax())

        def log_p(value, mask=mask, index=index):
            mask[index] = value
            with torch.no_grad():
                return model(**batch).logits.log_softmax(-1)[0, label].item()

        eps = 1e-4
        grad = (log_p(1 + eps) - log_p(1 - eps)) / (2 * eps)
        mask[index] = 1.0
        assert scores[kind][index].item() == pytest.approx(grad**2, rel=1e-3), kind
        assert scores[kind][index].item() > 1e-4


def test_activation_scores_are_weight_column_norm_times_input_norm(tmp_path):
    trainer = _trainer(tmp_path)
    pruner = trainer.pruner
    ranker = rankers.ActivationRanker(pruner)
    with pytest.raises(RuntimeError, match="saw no training forward pass"):
        ranker.structure_scores()
    ffn_out = pruner.structure.layers[0].ffn_out
    seen = []
    handle = ffn_out.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].detach()))
    batch = {k: torch.tensor(text_dataset(4)[k]) for k in ("input_ids", "attention_mask")}
    pruner.model.eval()
    pruner.model(**batch)  # an evaluation pass is not counted
    pruner.model.train()
    pruner.model(**batch)
    handle.remove()
    x = seen[-1].reshape(-1, seen[-1].shape[-1])
    expected = x.pow(2).sum(0).sqrt() * ffn_out.weight.detach().norm(dim=0)
    scores = ranker.structure_scores()
    torch.testing.assert_close(scores["ffn"][0], expected)
    assert scores["heads"].shape == (4, 4) and scores["hidden"].shape == (32,)
    assert not ranker.squares  # the next event ranks by the passes after this one


def test_mixed_ranker_takes_magnitude_only_for_the_named_kinds(tmp_path):
    trainer = _trainer(tmp_path)
    pruner = trainer.pruner
    own = pruner.scores
    own.i_bar = {k: torch.rand_like(v) for k, v in own.i_bar.items()}
    own.u_bar = {k: torch.rand_like(v) for k, v in own.u_bar.items()}
    rankers.install(trainer, "magnitude_hidden", None)
    mixed = pruner.scores.structure_scores()
    magnitude = ImportanceScores(pruner.model, "magnitude", 0.0, 0.0).structure_scores(pruner.structure)
    platon = own.structure_scores(pruner.structure)
    torch.testing.assert_close(mixed["hidden"], magnitude["hidden"])
    torch.testing.assert_close(mixed["ffn"], platon["ffn"])
    torch.testing.assert_close(mixed["heads"], platon["heads"])
    assert pruner.scores.update() is True  # the own scores still fold in gradients


def test_install_refuses_an_unknown_ranker(tmp_path):
    with pytest.raises(ValueError, match="Unknown ranker 'bogus'; choose from fisher"):
        rankers.install(_trainer(tmp_path), "bogus", None)


@pytest.mark.parametrize("ranker", rankers.RANKERS)
def test_each_ranker_drives_a_homodistil_run_to_its_targets(tmp_path, ranker):
    trainer = _trainer(tmp_path, max_steps=6, prune_start_step=0, prune_end_step=4, prune_every=1)
    rankers.install(trainer, ranker, text_dataset(16), samples=4)
    trainer.train()
    assert trainer.pruner.finished
    assert trainer.sliced_model().config.hidden_size == TARGETS["target_hidden_size"]


def test_mixed_ranker_survives_a_copy(tmp_path):
    import copy

    trainer = _trainer(tmp_path)
    rankers.install(trainer, "magnitude_heads_ffn", None)
    clone = copy.copy(trainer.pruner.scores)  # no RecursionError through __getattr__ before `own` is set
    assert clone.magnitude_kinds == ("heads", "ffn") and clone.first_signal is None


def test_activation_ranker_stops_collecting_once_the_masks_are_final(tmp_path):
    trainer = _trainer(tmp_path, max_steps=4, prune_start_step=0, prune_end_step=2, prune_every=1)
    rankers.install(trainer, "activation", None)
    trainer.train()
    assert trainer.pruner.finished and not trainer.pruner.scores.squares


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


def test_ranker_bad_inputs_say_what_to_do(tmp_path):
    trainer = _trainer(tmp_path)
    with pytest.raises(ValueError, match="The Fisher ranker needs >= 1 example per event, got 0"):
        rankers.FisherRanker(trainer.pruner, text_dataset(4), samples=0)
    probe = rankers.ActivationRanker(trainer.pruner)
    probe.load_state_dict({})  # nothing saved: fine
    with pytest.raises(ValueError, match="A benchmark ranker keeps no state; this pruning state was saved with"):
        probe.load_state_dict({"i_bar.x": torch.zeros(1)})


def test_random_ranker_keeps_a_seeded_random_set_in_one_order(tmp_path):
    def kept(seed):
        trainer = _trainer(tmp_path / str(seed), max_steps=6, prune_start_step=0, prune_end_step=4, prune_every=1)
        rankers.install(trainer, "random", None, seed=seed)
        fixed = {k: v.clone() for k, v in trainer.pruner.scores.fixed.items()}
        trainer.train()
        masks = trainer.pruner.masks
        # the final set is the top of the scores drawn at the start: the same order at every event
        for kind in ("hidden", "heads", "ffn"):
            mask = getattr(masks, kind).bool()
            rows = mask if mask.dim() == 2 else mask.unsqueeze(0)  # heads / FFN are kept per layer
            for row_mask, row_score in zip(rows, fixed[kind].view_as(rows)):
                assert row_score[row_mask].min() > row_score[~row_mask].max()
        return masks

    first, again, other = kept(0), kept(0), kept(1)
    assert torch.equal(first.hidden, again.hidden) and torch.equal(first.ffn, again.ffn)
    assert not torch.equal(first.hidden, other.hidden)
