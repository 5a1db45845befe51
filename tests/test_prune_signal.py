"""HomoDistil's pruning signal and its distillation: kept-head attention KD, finite / applied-step scores,
best-checkpoint masks, ViT pooler slicing, the ~0-score warning and label signal, PLATON's ΔT window, and the
tied MLM decoder counted once."""

import os
import warnings

import pytest
import torch
from conftest import bert_config, text_dataset, vit_config
from test_prune import config
from transformers import BertForMaskedLM, BertForSequenceClassification, TrainerCallback, ViTModel

from hf_compress import HomoDistilTrainer, slice_model
from hf_compress.models.structure import model_structure
from hf_compress.prune.masks import StructureMasks, keep_top
from hf_compress.prune.scorers.magnitude import MagnitudeScores
from hf_compress.prune.scores import ImportanceScores, StructureImportance, platon_update, structure_scores
from hf_compress.prune.trainer import PRUNING_STATE_NAME


def _batch(n=4, seed=3):
    data = text_dataset(n, seed=seed)[:n]
    return {"input_ids": torch.tensor(data["input_ids"]), "attention_mask": torch.tensor(data["attention_mask"])}


# ---- 1. attention KD on kept heads only ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["per_head", "mean"])
def test_attention_kd_ignores_pruned_heads(tmp_path, mode):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config(num_hidden_layers=1))
    args = config(str(tmp_path), kd_weight=0, hidden_weight=0, attention_weight=1.0, attention_head_mode=mode)
    trainer = HomoDistilTrainer(teacher_model=teacher, args=args)
    trainer.pruner.masks.heads[:, 2:] = 0  # heads 2, 3 pruned (rows 16..31 of query / key / value)
    inputs = _batch()

    def loss():
        with trainer.attention_maps(), torch.no_grad():
            return trainer.compute_loss(trainer.model, inputs).item()

    before = loss()
    with torch.no_grad():
        trainer.model.bert.encoder.layer[0].attention.self.query.weight[16:] += 3.0 * torch.randn(16, 32)
    after = loss()
    assert after == pytest.approx(before, abs=1e-7)  # what pruned heads attend to does not matter
    if mode == "per_head":
        assert after == pytest.approx(0.0, abs=1e-7)  # kept heads are still the teacher's
    with torch.no_grad():  # a kept head does count
        trainer.model.bert.encoder.layer[0].attention.self.query.weight[:8] += 3.0 * torch.randn(8, 32)
    assert loss() > before + 1e-4
    trainer.args.attention_kd_kept_heads = False  # the ablation switch: every head counts again
    changed = loss()
    with torch.no_grad():
        trainer.model.bert.encoder.layer[0].attention.self.query.weight[16:] += 3.0 * torch.randn(16, 32)
    assert abs(loss() - changed) > 1e-4


# ---- 2. only finite gradients of applied steps; NaN never ranked first ------------------------------------


def test_non_finite_gradient_is_not_folded_into_the_scores():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    scores = ImportanceScores(model, "platon", 0.85, 0.95)
    model(torch.randn(4, 3)).sum().backward()
    assert scores.update() is True
    kept = {k: v.clone() for k, v in scores.state_dict().items()}
    model.weight.grad[0, 0] = float("inf")
    assert scores.update() is False
    for key, value in scores.state_dict().items():
        assert torch.isfinite(value).all() and torch.equal(value, kept[key])
    assert scores.skipped_steps == 1


def test_keep_top_never_ranks_nan_first():
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    new = keep_top(torch.tensor([float("nan"), 1.0, 2.0, 5.0]), mask, 2)
    assert new.tolist() == [0.0, 1.0, 1.0, 0.0]
    # all kept entries NaN: still only kept entries are chosen (monotone)
    assert keep_top(torch.full((4,), float("nan")), mask, 3).tolist() == [1.0, 1.0, 1.0, 0.0]


class _SkipOverflowSteps(TrainerCallback):
    """Emulates fp16 loss scaling: at step 2 a gradient overflows and the grad scaler skips the step."""

    def __init__(self, trainer_ref):
        self.trainer_ref = trainer_ref

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if state.global_step != 2:
            return
        model = self.trainer_ref[0].model
        model.bert.embeddings.word_embeddings.weight.grad[1, 0] = float("inf")
        inner, original = optimizer.optimizer, optimizer.optimizer.step
        inner.step = lambda *a, **k: None  # the scaler skips the update

        def restore():
            inner.step = original

        optimizer._is_overflow, self._restore = True, restore

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if getattr(self, "_restore", None):
            self._restore()
            optimizer._is_overflow, self._restore = False, None


def test_skipped_overflow_step_leaves_scores_finite(tmp_path):
    torch.manual_seed(0)
    ref = []
    trainer = HomoDistilTrainer(
        teacher_model=BertForSequenceClassification(bert_config()),
        args=config(str(tmp_path), hard_label_weight=1.0),
        train_dataset=text_dataset(64),
        callbacks=[_SkipOverflowSteps(ref)],
    )
    ref.append(trainer)
    trainer.train()
    assert trainer.pruner.finished
    for value in trainer.pruner.scores.state_dict().values():
        assert torch.isfinite(value).all()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


# ---- 3. load_best_model_at_end restores the matching masks -----------------------------------------------


def test_best_model_is_a_checkpoint_at_the_final_shape_with_its_masks(tmp_path):
    torch.manual_seed(0)
    holder = []

    def earliest_is_best(_):
        return {"step": float(holder[0].state.global_step)}

    args = config(
        str(tmp_path / "run"),
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="step",
        greater_is_better=False,
        per_device_eval_batch_size=8,
    )
    trainer = HomoDistilTrainer(
        teacher_model=BertForSequenceClassification(bert_config()),
        args=args,
        train_dataset=text_dataset(64),
        eval_dataset=text_dataset(8, seed=1),
        compute_metrics=earliest_is_best,
    )
    holder.append(trainer)
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None and int(best.rsplit("-", 1)[1]) == args.final_prune_step  # not checkpoint-2
    from safetensors.torch import load_file

    saved = load_file(os.path.join(best, PRUNING_STATE_NAME))
    for key in ("hidden", "heads", "ffn"):
        assert torch.equal(getattr(trainer.pruner.masks, key), saved[f"mask.{key}"])
    trainer.save_model(str(tmp_path / "saved"))  # at the target shape: saves


# ---- 4. ViTModel with a pooler slices to a loadable config ------------------------------------------------


def test_bare_vit_with_pooler_slices_saves_and_reloads(tmp_path):
    torch.manual_seed(0)
    model = ViTModel(vit_config()).eval()
    masks = StructureMasks.full(model_structure(model))
    masks.load_state_dict(
        {
            "hidden": keep_top(torch.randn(32), masks.hidden, 16),
            "heads": keep_top(torch.randn(4, 4), masks.heads, 2),
            "ffn": keep_top(torch.randn(4, 64), masks.ffn, 40),
        }
    )
    sliced = slice_model(model, masks).eval()
    assert sliced.config.pooler_output_size == 16
    sliced.save_pretrained(tmp_path)
    reloaded = ViTModel.from_pretrained(tmp_path).eval()
    pixels = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels).pooler_output, sliced(pixels).pooler_output)


# ---- 6. a real signal before the first mask, PLATON's ΔT window, and the ~0 warning ------------------------


def _first_prune_scores(tmp_path, **kw):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config())
    args = config(str(tmp_path), kd_weight=1.0, hidden_weight=0, max_steps=3, prune_end_step=3, prune_every=3, **kw)
    trainer = HomoDistilTrainer(teacher_model=teacher, args=args, train_dataset=text_dataset(64))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    return trainer, [w for w in caught if issubclass(w.category, RuntimeWarning) and "~0" in str(w.message)]


def test_scores_of_a_teacher_copy_are_noise_and_warn(tmp_path):
    trainer, caught = _first_prune_scores(tmp_path)
    assert caught and "importance_label_weight" in str(caught[0].message)
    assert "importance='magnitude', which needs no gradients" in str(caught[0].message)


def test_importance_label_weight_gives_the_scores_a_signal(tmp_path):
    trainer, caught = _first_prune_scores(tmp_path, importance_label_weight=1.0)
    assert not caught
    assert trainer.pruner.scores.signal() > trainer.pruner.NOISE_SIGNAL
    assert trainer._loss_weights()["hard_label_loss"] == 0  # only while pruning


def test_importance_window_averages_sensitivity_before_the_ema():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2, bias=False)
    windowed = ImportanceScores(model, "platon", 0.85, 0.95, window=2)
    grads = [torch.randn(2, 3), torch.randn(2, 3)]
    sensitivities = []
    for grad in grads:
        model.weight.grad = grad.clone()
        sensitivities.append((model.weight.detach() * grad).abs())
        windowed.update()
        if len(sensitivities) == 1:  # mid-window: nothing folded yet
            assert windowed.i_bar["weight"].abs().max() == 0
    mean = (sensitivities[0] + sensitivities[1]) / 2
    i_bar, u_bar = platon_update(torch.zeros(2, 3), torch.zeros(2, 3), mean, torch.ones(2, 3), 0.85, 0.95)
    torch.testing.assert_close(windowed.i_bar["weight"], i_bar)
    torch.testing.assert_close(windowed.u_bar["weight"], u_bar)
    state = windowed.state_dict()
    assert "window_steps" in state and any(k.startswith("window_sum.") for k in state)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(importance_window=0), "importance_window must be an integer >= 1"),
        (dict(importance_label_weight=-1.0), "importance_label_weight must be a finite number >= 0"),
        (dict(target_num_layers=0), "target_num_layers must be a positive integer"),
    ],
)
def test_signal_config_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        config(str(tmp_path), **kwargs)


# ---- 7. the tied MLM decoder is the word-embedding table: counted once -----------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_tied_decoder_counts_once(tied):
    torch.manual_seed(0)
    model = BertForMaskedLM(bert_config(tie_word_embeddings=tied))
    structure = model_structure(model)
    scores = MagnitudeScores(model)
    got = structure_scores(structure, scores)["hidden"]
    decoder = model.cls.predictions.decoder
    structure.reads_hidden.remove(decoder)
    without_decoder = structure_scores(structure, scores)["hidden"]
    if tied:  # the decoder *is* the embedding table, already counted once
        torch.testing.assert_close(got, without_decoder)
    else:
        torch.testing.assert_close(got - without_decoder, decoder.weight.abs().sum(0))


# ---- recovery phase: distillation continues at the final shape -----------------------------------------------


def test_recovery_steps_end_pruning_early_and_keep_training_at_the_final_shape(tmp_path):
    torch.manual_seed(0)
    seen = {}

    class Record(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            masks = trainer.pruner.masks
            weight = model.bert.encoder.layer[0].intermediate.dense.weight.detach().clone()
            seen[state.global_step] = (masks.heads.clone(), masks.ffn.clone(), masks.hidden.clone(), weight)

    args = config(str(tmp_path), prune_end_step=None, recovery_steps=4, max_steps=10)
    assert args.prune_end_step == 6
    trainer = HomoDistilTrainer(
        teacher_model=BertForSequenceClassification(bert_config()),
        args=args,
        train_dataset=text_dataset(64),
        callbacks=[Record()],
    )
    trainer.train()
    assert trainer.pruner.finished
    # Record runs before the pruning callback: what it sees at step s are the masks after step s - 1.
    assert not all(torch.equal(a, b) for a, b in zip(seen[6][:3], seen[7][:3]))  # the last change, at step 6
    for step in range(8, 11):
        assert all(torch.equal(a, b) for a, b in zip(seen[7][:3], seen[step][:3]))
    assert not torch.equal(seen[7][3], seen[10][3])  # still learning at the final shape


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prune_end_step=None, recovery_steps=-1), "recovery_steps must be an integer >= 0"),
        (dict(prune_end_step=None, recovery_steps=2, max_steps=-1), "recovery_steps counts back from max_steps"),
        (dict(prune_end_step=5, recovery_steps=2), r"prune_end_step=5 and recovery_steps=2 disagree"),
        (dict(prune_end_step=None, recovery_steps=10), "cubic schedule needs prune_end_step > prune_start_step"),
    ],
)
def test_recovery_config_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        config(str(tmp_path), **kwargs)


# ---- depth and width in one run ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "vision"])
def test_depth_and_width_pruning_slices_to_a_stock_config(tmp_path, kind):
    from conftest import image_dataset
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    from hf_compress.distill.matching import TEACHER_LAYERS_ATTR

    torch.manual_seed(0)
    if kind == "text":
        teacher, data = BertForSequenceClassification(bert_config()), text_dataset(64)
        inputs = _batch()
        auto = AutoModelForSequenceClassification
    else:
        from transformers import ViTForImageClassification

        teacher, data = ViTForImageClassification(vit_config()), image_dataset(64)
        inputs = {"pixel_values": torch.randn(3, 1, 16, 16)}
        auto = AutoModelForImageClassification
    args = config(str(tmp_path / "run"), target_num_layers=2, hard_label_weight=1.0)
    trainer = HomoDistilTrainer(teacher_model=teacher, args=args, train_dataset=data)
    trainer.train()
    pruner = trainer.pruner
    assert pruner.finished and pruner.masks.counts() == {"hidden": 16, "heads": 2, "ffn": 32, "layers": 2}
    kept = pruner.masks.layers.nonzero().squeeze(1).tolist()
    assert trainer.layer_pairs == [(s, s) for s in kept]  # layer KD only for layers still there
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = auto.from_pretrained(str(tmp_path / "saved")).eval()
    assert reloaded.config.num_hidden_layers == 2 and reloaded.config.hidden_size == 16
    assert getattr(reloaded.config, TEACHER_LAYERS_ATTR) == {"layers": kept, "num_layers": 4}
    with torch.no_grad():
        expected = trainer.model.eval()(**inputs).logits
        torch.testing.assert_close(reloaded(**inputs).logits, expected, rtol=1e-4, atol=1e-5)


def test_dropped_layer_passes_its_input_through():
    from hf_compress.prune.masks import MaskHooks

    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config()).eval()
    structure = model_structure(model)
    masks = StructureMasks.full(structure)
    masks.layers[1] = 0
    hooks = MaskHooks(
        structure, masks, hidden=False, heads=False, ffn=False, layer_modules=list(model.bert.encoder.layer)
    )
    with torch.no_grad():
        out = model(**_batch(), output_hidden_states=True)
    hooks.remove()
    torch.testing.assert_close(out.hidden_states[2], out.hidden_states[1])
    assert not torch.allclose(out.hidden_states[3], out.hidden_states[2])


def test_more_layers_than_the_model_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="target_num_layers=8 is larger than the model's 4"):
        HomoDistilTrainer(
            teacher_model=BertForSequenceClassification(bert_config()), args=config(str(tmp_path), target_num_layers=8)
        )


def test_label_signal_needs_a_head_and_labels(tmp_path):
    from transformers import BertModel

    with pytest.raises(ValueError, match="importance_label_weight > 0 scores with the student's own loss"):
        HomoDistilTrainer(
            teacher_model=BertModel(bert_config()),
            args=config(str(tmp_path), kd_weight=0, importance_label_weight=1.0),
        )
    trainer = HomoDistilTrainer(
        teacher_model=BertForSequenceClassification(bert_config()),
        args=config(str(tmp_path), importance_label_weight=1.0),
        train_dataset=text_dataset(16).remove_columns("labels"),
    )
    with pytest.raises(ValueError, match="no labels.*importance_label_weight > 0 needs them too"):
        trainer.train()


# ---- structure-level (group Taylor) importance -----------------------------------------------------------


def _loss_and_grads(model, seed=3):
    model.zero_grad()
    batch = _batch(seed=seed)
    loss = model(**batch, labels=torch.tensor([0, 1, 2, 0])).loss
    loss.backward()
    return batch


def _scaled_loss_derivative(model, batch, owned: dict[str, torch.Tensor]) -> float:
    """d/d alpha of the loss when the entries ``owned`` (param name -> 0/1 mask) are scaled by alpha, at 1."""
    alpha = torch.ones((), requires_grad=True)
    params = {
        n: p.detach() * (1 + (alpha - 1) * owned[n]) if n in owned else p.detach() for n, p in model.named_parameters()
    }
    out = torch.func.functional_call(model, params, kwargs={**batch, "labels": torch.tensor([0, 1, 2, 0])})
    (grad,) = torch.autograd.grad(out.loss, alpha)
    return float(grad)


def test_structure_sensitivity_is_the_first_order_loss_change_of_removing_the_structure():
    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config(num_hidden_layers=2))
    structure = model_structure(model)
    scores = StructureImportance(model, structure, "taylor", 0.0, 0.0)  # beta1 = 0: I_bar = this step's value
    batch = _loss_and_grads(model)
    assert scores.update()
    got = scores.structure_scores()
    layer, head, neuron, d = 1, 2, 5, structure.head_dim
    prefix = f"bert.encoder.layer.{layer}."
    owned = {}
    for name in ("query", "key", "value"):
        rows = torch.zeros(32, 32)
        rows[head * d : (head + 1) * d] = 1
        owned[prefix + f"attention.self.{name}.weight"] = rows
        owned[prefix + f"attention.self.{name}.bias"] = rows[:, 0]
    cols = torch.zeros(32, 32)
    cols[:, head * d : (head + 1) * d] = 1
    owned[prefix + "attention.output.dense.weight"] = cols
    expected = abs(_scaled_loss_derivative(model, batch, owned))
    assert float(got["heads"][layer, head]) == pytest.approx(expected, rel=1e-4, abs=1e-9)
    assert expected > 1e-6  # a real signal, not two zeros
    ffn_in, ffn_out = torch.zeros(64, 32), torch.zeros(32, 64)
    ffn_in[neuron], ffn_out[:, neuron] = 1, 1
    owned = {
        prefix + "intermediate.dense.weight": ffn_in,
        prefix + "intermediate.dense.bias": ffn_in[:, 0],
        prefix + "output.dense.weight": ffn_out,
    }
    expected = abs(_scaled_loss_derivative(model, batch, owned))
    assert float(got["ffn"][layer, neuron]) == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_structure_sensitivity_lets_opposite_signs_cancel_where_the_weight_score_adds_them():
    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config(num_hidden_layers=1))
    structure = model_structure(model)
    per_structure = StructureImportance(model, structure, "taylor", 0.0, 0.0)
    per_weight = ImportanceScores(model, "taylor", 0.0, 0.0)
    _loss_and_grads(model)
    for p in model.parameters():
        p.grad.zero_()
    query = model.bert.encoder.layer[0].attention.self.query
    with torch.no_grad():  # head 0 owns rows 0..7: w * grad = +1 at one weight and -1 at another
        query.weight.grad[0, 0] = 1 / query.weight[0, 0]
        query.weight.grad[1, 0] = -1 / query.weight[1, 0]
    assert per_structure.update() and per_weight.update()
    assert float(per_structure.structure_scores()["heads"][0, 0]) == pytest.approx(0.0, abs=1e-6)
    assert float(per_weight.structure_scores(structure)["heads"][0, 0]) == pytest.approx(2.0, rel=1e-5)


def test_structure_scores_refuse_non_finite_gradients_and_magnitude():
    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config(num_hidden_layers=1))
    scores = StructureImportance(model, model_structure(model), "platon", 0.85, 0.95)
    _loss_and_grads(model)
    assert scores.update()
    kept = {k: v.clone() for k, v in scores.state_dict().items()}
    model.bert.embeddings.word_embeddings.weight.grad[1, 0] = float("nan")
    assert scores.update() is False and scores.skipped_steps == 1
    for key, value in scores.state_dict().items():
        assert torch.equal(value, kept[key])
    with pytest.raises(ValueError, match="needs gradients"):
        config("unused", importance="magnitude", importance_granularity="structure")
    with pytest.raises(ValueError, match="importance_granularity"):
        config("unused", importance_granularity="column")


def test_structure_scores_refuse_magnitude_and_a_state_of_another_shape():
    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config(num_hidden_layers=1))
    with pytest.raises(ValueError, match="Structure-level importance needs gradients"):
        StructureImportance(model, model_structure(model), "magnitude", 0.85, 0.95)
    scores = StructureImportance(model, model_structure(model), "platon", 0.85, 0.95)
    state = scores.state_dict()
    state["i_bar.heads"] = torch.zeros(2, 8)  # another model's head count
    with pytest.raises(ValueError, match=r"Saved i_bar.heads has shape \(2, 8\), this model's \(1, 4\)"):
        scores.load_state_dict(state)
