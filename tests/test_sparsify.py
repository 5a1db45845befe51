"""Weight sparsity: magnitude masks (unstructured, 2:4), the gradual schedule, `SparsifyTrainer` (zeros kept
through distillation and across a resume) and the ``sparsify`` recipe stage with its card note."""

import json

import pytest
import torch
from conftest import bert_config, text_dataset, train_args, vit_config
from tiny_assets import make_assets, run_cli, tiny_recipe
from transformers import (
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    TrainerCallback,
    ViTForImageClassification,
)

from hf_compress import SparsifyConfig, SparsifyTrainer
from hf_compress.models.arch import find_layer_list
from hf_compress.sparsity import GradualSparsity, magnitude_masks, measured_sparsity, sparsity_at
from hf_compress.sparsity.masks import WeightMaskCallback, encoder_linears


def config(out, **kw):
    return train_args(SparsifyConfig, out, **{"sparsity": 0.5, "sparsify_every": 2, **kw})


def pair(seed=0):
    torch.manual_seed(seed)
    teacher = BertForSequenceClassification(bert_config())
    student = BertForSequenceClassification(bert_config())
    student.load_state_dict(teacher.state_dict())
    return teacher, student


# ---- masks -------------------------------------------------------------------------------------------------


def test_two_four_masks_keep_the_two_largest_of_every_four():
    model = BertForSequenceClassification(bert_config())
    masks = magnitude_masks(model, 0.5, "2:4")
    modules = dict(model.named_modules())
    assert masks and all(m.view(m.shape[0], -1, 4).sum(-1).eq(2).all() for m in masks.values())
    for name, keep in masks.items():
        groups = modules[name].weight.abs().view(keep.shape[0], -1, 4)
        kept, dropped = groups[keep.view_as(groups)].view(*groups.shape[:2], 2), groups[~keep.view_as(groups)]
        assert kept.min(-1).values.ge(dropped.view(*groups.shape[:2], 2).max(-1).values).all()


@pytest.mark.parametrize("sparsity", [0.25, 0.75])
def test_unstructured_masks_drop_that_fraction_of_the_smallest_weights(sparsity):
    model = BertForSequenceClassification(bert_config())
    masks = magnitude_masks(model, sparsity)
    modules = dict(model.named_modules())
    for name, keep in masks.items():
        weight = modules[name].weight.abs()
        assert abs(1 - keep.float().mean().item() - sparsity) < 0.01
        assert weight[keep].min() >= weight[~keep].max()


def test_only_the_encoders_linears_are_masked():
    model = ViTForImageClassification(vit_config())
    prefix, layers = find_layer_list(model)
    names = set(encoder_linears(model))
    assert names == {f"{prefix}.{n}" for n, m in layers.named_modules() if isinstance(m, torch.nn.Linear)}
    assert len(names) == 6 * len(layers) and "classifier" not in names


def test_mask_and_config_errors_say_what_to_do(tmp_path):
    model = BertForSequenceClassification(bert_config())
    with pytest.raises(ValueError, match="2:4 semi-structured sparsity is always 0.5"):
        magnitude_masks(model, 0.6, "2:4")
    with pytest.raises(ValueError, match=r"pattern='1:8' is not supported; choose one of \['unstructured', '2:4'\]"):
        magnitude_masks(model, 0.5, "1:8")
    with pytest.raises(ValueError, match=r"set sparsity=0.5 \(got 0.7\)"):
        config(tmp_path, sparsity_pattern="2:4", sparsity=0.7)
    with pytest.raises(ValueError, match=r"sparsity must be in \(0, 1\)"):
        config(tmp_path, sparsity=1.0)
    with pytest.raises(ValueError, match="sparsity_pattern='4:8' is not supported"):
        config(tmp_path, sparsity_pattern="4:8")
    with pytest.raises(ValueError, match="sparsify_end_step must be an integer > sparsify_start_step"):
        config(tmp_path, sparsify_start_step=4, sparsify_end_step=4)
    with pytest.raises(ValueError, match="is not before max_steps=10"):
        config(tmp_path, sparsify_start_step=10)
    with pytest.raises(ValueError, match=r"sparsify_end_step=20 is past max_steps=10: the run would end short"):
        config(tmp_path, sparsify_end_step=20)
    assert config(tmp_path, max_steps=30).sparsify_end_step == 20  # default: 2/3 of the run


# ---- schedule ----------------------------------------------------------------------------------------------


def test_the_cubic_schedule_rises_from_zero_to_the_target_fast_first():
    values = [sparsity_at(step, 2, 12, 0.8) for step in range(15)]
    assert values[:3] == [0.0, 0.0, 0.0] and values[12:] == [0.8] * 3
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[7] > 0.8 * 0.5  # half-way through the window, more than half-way to the target (cubic)


def test_masks_update_on_schedule_steps_only(tmp_path):
    _, student = pair()
    callback = GradualSparsity(student, config(tmp_path, sparsify_start_step=2, sparsify_end_step=8, sparsify_every=3))
    assert [round(callback.target(step), 4) for step in (1, 2, 3, 4, 5, 6, 8, 9)] == [
        0.0, 0.0, 0.0, 0.0, round(sparsity_at(5, 2, 8, 0.5), 4), round(sparsity_at(5, 2, 8, 0.5), 4), 0.5, 0.5,
    ]  # fmt: skip


# ---- training ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_training_reaches_the_target_and_keeps_the_zeros(tmp_path, pattern):
    teacher, student = pair()
    args = config(tmp_path, sparsity_pattern=pattern, max_steps=8, sparsify_end_step=5, learning_rate=1e-2)
    trainer = SparsifyTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset(32))
    trainer.train()
    assert abs(measured_sparsity(trainer.model) - 0.5) < 0.01
    if pattern == "2:4":
        for linear in encoder_linears(trainer.model).values():
            assert linear.weight.view(linear.weight.shape[0], -1, 4).ne(0).sum(-1).le(2).all()
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")  # an ordinary checkpoint
    assert abs(measured_sparsity(reloaded) - 0.5) < 0.01


def test_masks_only_grow_even_when_the_optimizer_moves_zeroed_weights(tmp_path):
    teacher, student = pair()
    args = config(tmp_path, max_steps=8, sparsify_end_step=6, sparsify_every=1, learning_rate=5e-2)
    trainer = SparsifyTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset(32))
    history = []
    original = trainer.sparsity._step

    def step(step):
        original(step)
        history.append({name: keep.clone() for name, keep in trainer.sparsity.masks.items()})

    trainer.sparsity._step = step
    trainer.train()
    history = [masks for masks in history if masks]
    assert len(history) >= 6
    for before, after in zip(history, history[1:]):  # a weight zeroed once stays zeroed
        assert all((~before[name] & after[name]).sum() == 0 for name in before)


def test_a_2to4_pattern_that_does_not_fit_is_refused_before_training(tmp_path):
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(bert_config(intermediate_size=38))
    student = BertForSequenceClassification(bert_config(intermediate_size=38))
    with pytest.raises(ValueError, match="38 input features, not a multiple of 4, so 2:4 cannot apply"):
        SparsifyTrainer(model=student, teacher_model=teacher, train_dataset=text_dataset(8),
                        args=config(tmp_path, sparsity_pattern="2:4"))  # fmt: skip


def test_the_best_checkpoint_is_chosen_only_at_the_target_sparsity(tmp_path):
    teacher, student = pair()
    args = config(tmp_path, max_steps=8, sparsify_end_step=6, eval_strategy="steps", eval_steps=2,
                  save_strategy="steps", save_steps=2, load_best_model_at_end=True, metric_for_best_model="loss",
                  greater_is_better=False)  # fmt: skip
    trainer = SparsifyTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset(32),
                              eval_dataset=text_dataset(16, seed=1))  # fmt: skip
    trainer.train()
    assert int(trainer.state.best_model_checkpoint.rsplit("-", 1)[1]) >= 6
    assert abs(measured_sparsity(trainer.model) - 0.5) < 0.01


def test_a_run_stopped_short_of_the_target_warns(tmp_path, caplog):
    teacher, student = pair()
    args = config(tmp_path, max_steps=3, sparsify_end_step=2)
    trainer = SparsifyTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset(32))
    args.max_steps = 1  # stopped early (as a Trainer run cut short would be)
    with caplog.at_level("WARNING", logger="hf_compress.sparsity.trainer"):
        trainer.train()
    assert "short of the target 50.0%" in caplog.text


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    class StopAt4(TrainerCallback):  # a run killed after its step-4 checkpoint
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step == 4

    def run(out, resume=None, callbacks=()):
        teacher, student = pair()
        args = config(out, max_steps=8, sparsify_end_step=6, save_strategy="steps", save_steps=4, learning_rate=1e-2)
        trainer = SparsifyTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset(32),
                                  callbacks=list(callbacks))  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        return trainer.model

    straight = run(tmp_path / "a")
    run(tmp_path / "b", callbacks=[StopAt4()])
    resumed = run(tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-4"))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_the_mask_callback_keeps_fixed_masks_through_plain_distillation(tmp_path):
    from hf_compress import DistillationConfig, DistillationTrainer

    teacher, student = pair()
    masks = magnitude_masks(student, 0.75)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, train_dataset=text_dataset(32),
                                  args=train_args(DistillationConfig, tmp_path, max_steps=3, learning_rate=1e-2),
                                  callbacks=[WeightMaskCallback(student, masks)])  # fmt: skip
    trainer.train()
    modules = dict(student.named_modules())
    for name, keep in masks.items():
        assert modules[name].weight[~keep].abs().max() == 0


# ---- the recipe stage --------------------------------------------------------------------------------------


def test_the_sparsify_stage_runs_in_a_recipe_and_its_card_says_it_is_not_faster(tmp_path):
    assets = make_assets(tmp_path / "assets")
    stage = {"name": "sparse", "method": "sparsify", "sparsity": 0.5, "sparsity_pattern": "2:4", "max_steps": 4,
             "per_device_train_batch_size": 8, "use_cpu": True}  # fmt: skip
    out = tmp_path / "out"
    assert run_cli(tmp_path, tiny_recipe(assets, stage), out=out) == 0
    model = AutoModelForSequenceClassification.from_pretrained(out / "00-sparse")
    assert abs(measured_sparsity(model) - 0.5) < 0.01
    card = (out / "00-sparse" / "README.md").read_text()
    assert "Sparsity: 50.0% of the encoder's Linear weights are zero" in card and "not faster" in card
    assert "sparsity" in card.split("---")[1]  # a card tag
    summary = json.loads((out / "summary.json").read_text())
    assert "not faster" in summary["stages"][0]["note"]
    assert "- sparse: Sparsity: 50.0%" in (out / "summary.md").read_text()


def test_a_sparsified_model_exports_to_onnx_with_its_zeros(tmp_path):
    pytest.importorskip("onnxruntime")
    from hf_compress import export_onnx

    teacher, student = pair()
    args = config(tmp_path / "train", sparsity_pattern="2:4", max_steps=2)
    trainer = SparsifyTrainer(model=student, teacher_model=teacher, args=args, train_dataset=text_dataset(32))
    trainer.train()
    report = export_onnx(trainer.model, tmp_path / "onnx")
    assert report.passed, report.summary()
