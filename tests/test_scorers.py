"""The importance scorer registry (hf_compress/prune/scorers): every scorer scores every structure kind on a tiny
BERT and a tiny ViT and drives a HomoDistil run to a dense model, Fisher and activation x weight rank what magnitude
cannot see, the random control is seeded, states round-trip through checkpoints, and a scorer defined here trains
without a library change."""

import ast
import types
from pathlib import Path

import pytest
import torch
from conftest import PRUNE_DEFAULTS, bert_config, image_dataset, text_dataset, train_args, vit_config
from torch.utils.data import IterableDataset
from transformers import BertForSequenceClassification, BertModel, TrainerCallback, ViTForImageClassification

from hf_compress import HomoDistilConfig, HomoDistilTrainer
from hf_compress.prune import pruner as pruner_module
from hf_compress.prune.masks import keep_top
from hf_compress.prune.scorers import (
    EventScorer,
    ImportanceScorer,
    UnknownScorerError,
    get_scorer,
    register_scorer,
    registry,
    scorer_names,
)
from hf_compress.prune.scorers.fisher import FisherScores
from hf_compress.prune.scorers.magnitude import MagnitudeScores

SCORERS = ["platon", "taylor", "magnitude", "fisher", "activation", "random"]
SHAPES = {"hidden": (32,), "heads": (4, 4), "ffn": (4, 64)}  # both tiny models: 4 layers, 4 heads, 32 / 64 wide


def _config(out, **kw):
    return train_args(HomoDistilConfig, out, **{**PRUNE_DEFAULTS, "fisher_samples": 4, **kw})


def _teacher_and_data(kind, n=48, **config):
    torch.manual_seed(0)
    if kind == "text":
        return BertForSequenceClassification(bert_config(**config)), text_dataset(n)
    return ViTForImageClassification(vit_config(**config)), image_dataset(n)


def _trainer(tmp_path, kind="text", teacher_config=None, **kw):
    teacher, data = _teacher_and_data(kind, **(teacher_config or {}))
    return HomoDistilTrainer(teacher_model=teacher, args=_config(str(tmp_path), **kw), train_dataset=data)


def _batch(data, n=8):
    rows = data[:n]
    return {k: torch.as_tensor(v) for k, v in rows.items()}


def _one_step(trainer):
    """A training forward / backward on the masked student and the scorer's update, as the callback does."""
    model = trainer.pruner.model.train()
    model(**_batch(trainer.train_dataset)).loss.backward()
    assert trainer.pruner.update_scores()


@pytest.fixture
def private_registry(monkeypatch):
    """Registrations made by a test go to a copy of the registry that is dropped afterwards."""
    monkeypatch.setattr(registry._REGISTRY, "entries", dict(registry._REGISTRY.entries))


# ---- every scorer: shapes, a full run, a dense model ------------------------------------------------------


def test_every_product_scorer_is_registered():
    assert set(SCORERS) <= set(scorer_names())
    assert get_scorer("magnitude").needs_steps is False and get_scorer("platon").needs_steps is True
    assert get_scorer("platon").structure_granularity and not get_scorer("fisher").structure_granularity


@pytest.mark.parametrize("kind", ["text", "vision"])
@pytest.mark.parametrize("name", SCORERS)
def test_scorer_scores_every_structure_kind(tmp_path, name, kind):
    trainer = _trainer(tmp_path, kind, importance=name)
    scores = trainer.pruner.scores
    assert isinstance(scores, ImportanceScorer)
    _one_step(trainer)
    got = scores.structure_scores(trainer.pruner.structure)
    assert set(got) == set(SHAPES)
    for key, shape in SHAPES.items():
        assert tuple(got[key].shape) == shape, (name, key)
        assert got[key].device.type == "cpu" and torch.isfinite(got[key]).all()
        assert (got[key] > 0).sum() > got[key].numel() // 2, (name, key)  # a ranking, not zeros


@pytest.mark.parametrize("kind", ["text", "vision"])
@pytest.mark.parametrize("name", SCORERS)
def test_homodistil_with_each_scorer_reaches_the_targets_and_slices(tmp_path, name, kind):
    trainer = _trainer(tmp_path, kind, importance=name)
    trainer.train()
    pruner = trainer.pruner
    assert pruner.finished and pruner.masks.counts() == pruner.targets
    sliced = trainer.model
    config = sliced.config
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == (16, 2, 32)
    batch = {k: v for k, v in _batch(trainer.train_dataset, 4).items() if k != "labels"}
    with torch.no_grad():  # the dense model computes what the masked one does
        expected = pruner.model.eval()(**batch).logits
        torch.testing.assert_close(sliced.eval()(**batch).logits, expected, rtol=1e-4, atol=1e-5)


# ---- rankings magnitude cannot see --------------------------------------------------------------------------


def test_fisher_ranks_a_neuron_without_effect_last_where_magnitude_ranks_it_first(tmp_path):
    trainer = _trainer(tmp_path, importance="fisher")
    pruner, neuron = trainer.pruner, 5
    layer = pruner.structure.layers[1]
    with torch.no_grad():  # big weights in, nothing out: removing it changes no output
        layer.ffn_out.weight[:, neuron] = 0.0
        for proj, offset in layer.ffn_blocks():
            proj.weight[offset + neuron] *= 50
    magnitude = MagnitudeScores(pruner.model).structure_scores(pruner.structure)["ffn"][1]
    fisher = pruner.scores.structure_scores(pruner.structure)["ffn"][1]
    assert int(magnitude.argmax()) == neuron
    assert fisher[neuron] == 0.0 and fisher.max() > 0
    keep = torch.ones(64)
    assert keep_top(magnitude, keep, 32)[neuron] == 1 and keep_top(fisher, keep, 32)[neuron] == 0


def test_activation_ranks_a_neuron_that_never_fires_last_where_magnitude_ranks_it_first(tmp_path):
    trainer = _trainer(tmp_path, importance="activation")
    pruner, neuron = trainer.pruner, 7
    layer = pruner.structure.layers[0]
    (proj, offset), *_ = layer.ffn_blocks()
    with torch.no_grad():  # GELU(-30) is 0: the neuron never fires, however large its output column
        proj.weight[offset + neuron] = 0.0
        proj.bias[offset + neuron] = -30.0
        layer.ffn_out.weight[:, neuron] *= 20
    _one_step(trainer)
    magnitude = MagnitudeScores(pruner.model).structure_scores(pruner.structure)["ffn"][0]
    activation = pruner.scores.structure_scores(pruner.structure)["ffn"][0]
    assert int(magnitude.argmax()) == neuron
    assert int(activation.argmin()) == neuron and activation[neuron] < 1e-6 * activation.max()


def test_activation_scores_are_weight_column_norm_times_input_norm(tmp_path):
    trainer = _trainer(tmp_path, importance="activation")
    pruner, scores = trainer.pruner, trainer.pruner.scores
    with pytest.raises(RuntimeError, match="saw no training forward pass"):
        scores.structure_scores()
    ffn_out = pruner.structure.layers[0].ffn_out
    seen = []
    handle = ffn_out.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].detach()))
    batch = {k: torch.tensor(text_dataset(4)[k]) for k in ("input_ids", "attention_mask")}
    pruner.model.eval()(**batch)  # an evaluation pass is not counted
    pruner.model.train()(**batch)
    handle.remove()
    x = seen[-1].reshape(-1, seen[-1].shape[-1])
    expected = x.pow(2).sum(0).sqrt() * ffn_out.weight.detach().norm(dim=0)
    torch.testing.assert_close(scores.structure_scores()["ffn"][0], expected)
    assert not scores.squares  # the next event ranks by the passes after this one
    pruner.remove_hooks()
    assert not scores.handles


def test_activation_checkpoints_hold_every_processs_sums_and_resume_shares_them(tmp_path, monkeypatch):
    """Two DDP ranks seeing the same inputs, simulated: the saved sums are both ranks' (twice one rank's), and a
    resumed rank holds half of them, so the next all-reduce adds up to what an uninterrupted run would have."""
    from hf_compress.prune.scorers import activation as module

    trainer = _trainer(tmp_path, importance="activation")
    scores = trainer.pruner.scores
    batch = {k: torch.tensor(text_dataset(4)[k]) for k in ("input_ids", "attention_mask")}
    trainer.pruner.model.train()(**batch)
    local = {key: total.clone() for key, total in scores.squares.items()}
    monkeypatch.setattr(module.dist, "is_available", lambda: True)
    monkeypatch.setattr(module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(module.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(module.dist, "all_reduce", lambda tensor: tensor.mul_(2))  # the other rank: the same sums
    state = scores.state_dict()
    for key, total in local.items():
        torch.testing.assert_close(state[f"squares.{scores.names[key]}"], 2 * total)
        torch.testing.assert_close(scores.squares[key], total)  # the rank's own sums are left as they were
    scores.load_state_dict(state)
    for key, total in local.items():
        torch.testing.assert_close(scores.squares[key], total)  # a half share each: 2 ranks x 1/2 = the saved sums


def test_fisher_is_the_squared_mask_gradient_of_the_sampled_log_likelihood(tmp_path):
    # confident logits (wide initialisation): gradients well above rounding
    trainer = _trainer(tmp_path, importance="fisher", teacher_config=dict(initializer_range=0.3))
    pruner, data = trainer.pruner, text_dataset(1)
    model = pruner.model.double()  # float64, so that central differences are exact enough to compare
    stub = types.SimpleNamespace(train_dataset=data, data_collator=None)
    scores = FisherScores(pruner, stub, samples=1, seed=3).structure_scores()
    assert all(p.grad is None for p in model.parameters()) and model.training  # training state left as it was
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


def test_fisher_walks_the_train_dataset_and_refuses_what_it_cannot_score(tmp_path):
    trainer = _trainer(tmp_path, importance="fisher", fisher_samples=5)
    trainer.pruner.scores.structure_scores()
    assert trainer.pruner.scores.position == 5  # the next event scores the next examples
    with pytest.raises(ValueError, match="BertModel \\(none\\) does not give"):
        args = _config(tmp_path, importance="fisher", kd_weight=0)
        HomoDistilTrainer(teacher_model=BertModel(bert_config()), args=args)
    with pytest.raises(ValueError, match="needs the trainer's train_dataset"):
        args = _config(tmp_path, importance="fisher")
        pruner_module.StructuredPruner(BertForSequenceClassification(bert_config()), args)

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(text_dataset(4))

    teacher = BertForSequenceClassification(bert_config())
    with pytest.raises(ValueError, match="has no len\\(\\) / indexing"):
        HomoDistilTrainer(teacher_model=teacher, args=_config(tmp_path, importance="fisher"), train_dataset=Stream())


# ---- the random control ----------------------------------------------------------------------------------


def test_random_keeps_a_seeded_random_set_in_one_order(tmp_path):
    def kept(seed):
        trainer = _trainer(tmp_path / str(seed), importance="random", seed=seed, prune_every=1)
        fixed = {k: v.clone() for k, v in trainer.pruner.scores.fixed.items()}
        trainer.train()
        masks = trainer.pruner.masks
        # the final set is the top of the scores drawn at the start: the same order at every event
        for kind in ("hidden", "heads", "ffn"):
            mask = getattr(masks, kind).bool()
            rows = mask if mask.dim() == 2 else mask.unsqueeze(0)  # heads / FFN are kept per layer
            for row_mask, row_score in zip(rows, fixed[kind].view_as(rows)):
                assert row_score[row_mask].min() > row_score[~row_mask].max()
        return fixed, masks

    (first, masks), (again, masks_again), (other, masks_other) = kept(0), kept(0), kept(1)
    for kind in ("hidden", "heads", "ffn"):
        assert torch.equal(first[kind], again[kind]) and torch.equal(getattr(masks, kind), getattr(masks_again, kind))
    assert not torch.equal(first["hidden"], other["hidden"]) and not torch.equal(masks.hidden, masks_other.hidden)


# ---- checkpoints ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCORERS)
def test_scorer_state_round_trips_and_continues_identically(tmp_path, name):
    trainer = _trainer(tmp_path / "a", importance=name)
    _one_step(trainer)
    if name == "fisher":
        trainer.pruner.scores.structure_scores()  # moves its position and generator
    state = trainer.pruner.state_dict()
    fresh = _trainer(tmp_path / "b", importance=name)
    fresh.pruner.load_state_dict(state)
    restored = fresh.pruner.state_dict()
    assert restored.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(restored[key], value), key
    structure = trainer.pruner.structure
    expected = trainer.pruner.scores.structure_scores(structure)
    got = fresh.pruner.scores.structure_scores(fresh.pruner.structure)
    for key in SHAPES:
        torch.testing.assert_close(got[key], expected[key])


@pytest.mark.parametrize("name", ["fisher", "activation"])
def test_resume_mid_pruning_matches_an_uninterrupted_run(tmp_path, name):
    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                control.should_training_stop = True

    def run(out, resume=None, callbacks=None):
        teacher, data = _teacher_and_data("text")
        args = _config(out, importance=name, save_strategy="steps", save_steps=3, prune_every=1)
        trainer = HomoDistilTrainer(teacher_model=teacher, args=args, train_dataset=data, callbacks=callbacks)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run(str(tmp_path / "a"))
    interrupted = run(str(tmp_path / "b"), callbacks=[StopAt()])
    assert not interrupted.pruner.finished
    resumed = run(str(tmp_path / "b"), resume=str(tmp_path / "b" / "checkpoint-3"))
    for kind in ("hidden", "heads", "ffn"):
        assert torch.equal(getattr(resumed.pruner.masks, kind), getattr(straight.pruner.masks, kind))
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)


def test_resuming_with_another_scorer_is_a_clear_error(tmp_path):
    saved = _trainer(tmp_path / "a", importance="platon").pruner.state_dict()
    other = _trainer(tmp_path / "b", importance="magnitude").pruner
    message = "saved by a run with importance='platon', but this run uses importance='magnitude'"
    with pytest.raises(ValueError, match=message):
        other.load_state_dict(saved)
    del saved["scorer"]  # a state without the name: the scorer's own check still refuses it
    with pytest.raises(ValueError, match="does not fit the 'magnitude' scorer"):
        other.load_state_dict(saved)


# ---- the registry and the config --------------------------------------------------------------------------


def test_registry_refuses_duplicate_bad_and_unknown_names(private_registry):
    with pytest.raises(ValueError, match="importance scorer 'platon' is already registered"):
        register_scorer("platon", lambda pruner, trainer: None)
    with pytest.raises(ValueError, match="scorer name 'Bad name' is not valid"):
        register_scorer("Bad name", lambda pruner, trainer: None)
    with pytest.raises(TypeError, match="needs a callable factory"):
        register_scorer("not_callable", 3)
    with pytest.raises(UnknownScorerError, match=r"importance='nope' is not a registered .*'fisher', 'magnitude'"):
        get_scorer("nope")
    with pytest.raises(KeyError):
        get_scorer("nope")


def test_no_pruning_module_outside_the_scorers_names_a_scorer():
    """The config, pruner and trainer ask the registry: no string literal there is a scorer name, but the default.
    (``scores.py`` is the PLATON maths that the platon and taylor scorers share, kind included.)"""
    names = set(scorer_names())
    package = Path(__file__).resolve().parent.parent / "hf_compress" / "prune"
    found = []
    for path in sorted(package.glob("*.py")):
        if path.name == "scores.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert found == [f"config.py:{_default_line(package / 'config.py')} 'platon'"], found


def _default_line(path):
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("importance: str = field("))
    return start + 2  # default="platon" on the next line (1-based)


def test_a_factory_that_breaks_the_protocol_is_refused(tmp_path, private_registry):
    register_scorer("broken", lambda pruner, trainer: object(), needs_steps=False)
    with pytest.raises(TypeError, match=r"'broken' returned a object, which lacks \['first_signal', 'update'"):
        _trainer(tmp_path, importance="broken")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(importance="nope"), r"importance='nope' is not a registered importance scorer; choose one of"),
        (dict(fisher_samples=0), "fisher_samples must be an integer >= 1, got 0"),
        (dict(importance="fisher", importance_granularity="structure"), "'taylor', or importance_granularity='weight"),
        (dict(importance="activation", pruning_schedule="oneshot"), "importance='fisher' / 'magnitude' / 'random'"),
    ],
)
def test_config_checks_the_scorer(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **kwargs)


def test_scorers_that_need_no_steps_prune_one_shot_at_step_zero(tmp_path):
    for name in ("magnitude", "fisher", "random"):
        trainer = _trainer(tmp_path / name, importance=name, pruning_schedule="oneshot")
        assert trainer.pruner.step(0) and trainer.pruner.finished


# ---- a scorer of one's own -------------------------------------------------------------------------------


class LowestIndexFirst(EventScorer):
    """Keeps the lowest-numbered structures of each kind, and counts the updates it is given."""

    name = "lowest_first"

    def __init__(self, pruner):
        self.masks, self.updates = pruner.masks, 0

    def update(self):
        self.updates += 1
        return True

    def structure_scores(self, structure):
        return {k: -torch.arange(m.numel(), dtype=torch.float32).view_as(m) for k, m in self.state_masks().items()}

    def state_masks(self):
        return {"hidden": self.masks.hidden, "heads": self.masks.heads, "ffn": self.masks.ffn}

    def state_dict(self):
        return {"updates": torch.tensor(self.updates)}

    def load_state_dict(self, state):
        self.updates = int(state["updates"])


def test_a_scorer_registered_here_trains_without_a_library_change(tmp_path, private_registry):
    register_scorer("lowest_first", lambda pruner, trainer: LowestIndexFirst(pruner), needs_steps=False)
    assert "lowest_first" in scorer_names()
    trainer = _trainer(tmp_path, importance="lowest_first")
    trainer.train()
    masks = trainer.pruner.masks
    assert torch.equal(masks.hidden, (torch.arange(32) < 16).float())
    assert torch.equal(masks.heads, (torch.arange(4) < 2).float().expand(4, 4))
    assert torch.equal(masks.ffn, (torch.arange(64) < 32).float().expand(4, 64))
    assert trainer.pruner.scores.updates == PRUNE_DEFAULTS["prune_end_step"]  # every applied step until final
    assert trainer.model.config.hidden_size == 16
