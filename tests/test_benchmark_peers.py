"""The peers of the benchmark (the `bench` extra) on tiny models: each runs, and runs the comparison fairly.

Skipped where the peer is not installed (`pip install -e ".[bench]"`; `make test` installs it).
"""

import copy

import pytest
import torch
from conftest import bert_config, image_dataset, text_dataset, vit_config
from transformers import BertForSequenceClassification, ViTForImageClassification

from benchmarks import memory, peers
from hf_compress import DistillationConfig, DistillationTrainer, make_student

CASES = {
    "text": (lambda: BertForSequenceClassification(bert_config()), lambda: text_dataset(8)),
    "vision": (lambda: ViTForImageClassification(vit_config()), lambda: image_dataset(8)),
}


def _stack(rows):  # the tiny text rows all have the same length
    return {k: torch.as_tensor([r[k] for r in rows]) for k in rows[0]}


def _batch(kind):
    _, data = CASES[kind]
    return dict(data().with_format("torch")[:])


@pytest.mark.parametrize("kind", sorted(CASES))
def test_textbrewer_optimises_exactly_our_objective(tmp_path, kind):
    """Same teacher, student, batch: TextBrewer's loss gradient equals our DistillationTrainer's."""
    pytest.importorskip("textbrewer")
    torch.manual_seed(0)
    teacher = CASES[kind][0]().eval()
    student = make_student(teacher, layers=[1, 3]).eval()
    twin = copy.deepcopy(student)
    batch = _batch(kind)
    weights = dict(temperature=2.0, kd_weight=1.0, hidden_weight=0.7, attention_weight=0.4)
    args = DistillationConfig(output_dir=str(tmp_path / "ours"), report_to=[], use_cpu=True, **weights)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    with trainer.attention_maps():
        ours = torch.autograd.grad(trainer.compute_loss(student, dict(batch)), list(student.parameters()))

    teacher_tb = copy.deepcopy(teacher)
    for m in (teacher_tb, twin):
        m.set_attn_implementation("eager")
    distiller = peers.textbrewer_distiller(
        teacher_tb, twin, layer_pairs=trainer.layer_pairs, output_dir=str(tmp_path / "tb"), steps=1, **weights
    )
    loss, _ = distiller.train_on_batch(dict(batch), peers.forward_kwargs(weights["attention_weight"]))
    theirs = torch.autograd.grad(loss, list(twin.parameters()))
    assert any(g.abs().sum() > 0 for g in ours)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_textbrewer_training_run_changes_the_student():
    pytest.importorskip("textbrewer")
    torch.manual_seed(0)
    teacher = CASES["text"][0]().eval()
    student = make_student(teacher, layers=[1, 3])
    before = copy.deepcopy(student.state_dict())
    seconds = peers.textbrewer_distill(
        teacher, student, text_dataset(16), _stack, layer_pairs=[(0, 1), (1, 3)], max_steps=2, batch_size=8,
        learning_rate=1e-2, warmup_steps=0,
    )  # fmt: skip
    assert seconds > 0
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert student.config._attn_implementation == teacher.config._attn_implementation  # restored


@pytest.mark.parametrize("kind", sorted(CASES))
def test_torch_pruning_reaches_our_shape_but_does_not_reload(tmp_path, kind):
    pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = CASES[kind][0]().eval()
    batch = {k: v for k, v in _batch(kind).items() if k != "labels"}
    model.requires_grad_(False)  # a frozen teacher, as our trainers leave it
    pruned = peers.torch_pruning_prune(model, batch, ratio=0.5)
    assert peers.structure_of(pruned) == (16, 2, 32)
    assert pruned(**batch).logits.shape == (8, model.config.num_labels)
    assert pruned.config.hidden_size == 32  # Torch-Pruning leaves the config stale ...
    pruned.save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="size"):  # ... so from_pretrained cannot load what it saved
        type(model).from_pretrained(tmp_path)


@pytest.mark.parametrize("method", ["torchao", "quanto_w8", "quanto_w8a8"])
def test_quantization_peers_stay_close_and_their_memory_is_measured(method):
    pytest.importorskip("torchao" if method == "torchao" else "optimum.quanto")
    torch.manual_seed(0)
    model = CASES["text"][0]().eval()
    batch = {k: v for k, v in _batch("text").items() if k != "labels"}
    with torch.no_grad():
        reference = model(**batch).logits
    if method == "torchao":
        quantized = peers.torchao_int8_weight_only(copy.deepcopy(model))
    else:
        quantized = peers.quanto_int8(copy.deepcopy(model), [batch] if method == "quanto_w8a8" else None)
    with torch.no_grad():
        out = quantized(**batch).logits
    assert 0 < (out - reference).abs().max() < 0.1 * reference.abs().max()
    measured = memory.peak_inference_mb(quantized, batch, threads=1)
    assert "error" not in measured, measured
    assert measured["peak_mb"] >= measured["resident_mb"] > 0


def test_missing_peer_says_how_to_install():
    with pytest.raises(ImportError, match=r"pip install -e \"\.\[bench\]\""):
        peers.require("no_such_peer_module", "no-such-peer")


def test_peak_memory_grows_with_the_model():
    torch.manual_seed(0)
    small = BertForSequenceClassification(bert_config(hidden_size=32, intermediate_size=64)).eval()
    large = BertForSequenceClassification(bert_config(hidden_size=256, intermediate_size=1024)).eval()
    batch = {k: v for k, v in _batch("text").items() if k != "labels"}
    a, b = (memory.peak_inference_mb(m, batch, threads=1) for m in (small, large))
    assert b["resident_mb"] > a["resident_mb"]
    # the large model's float weights are ~4 bytes per parameter; RSS sees at least most of them
    params_mb = sum(p.numel() for p in large.parameters()) * 4 / 2**20
    assert 0.8 * params_mb < b["resident_mb"] < 3 * params_mb + 20


def test_peak_memory_of_a_model_that_already_captured_outputs():
    """transformers 5 installs unpicklable output-capturing hooks on first use; the measurement copes."""
    torch.manual_seed(0)
    model = ViTForImageClassification(vit_config()).eval()
    batch = {"pixel_values": torch.randn(2, 1, 16, 16)}
    model(**batch, output_hidden_states=True, output_attentions=True)
    measured = memory.peak_inference_mb(model, batch, threads=1)
    assert "error" not in measured, measured
    assert measured["peak_mb"] >= measured["resident_mb"] > 0
    assert model(**batch, output_hidden_states=True).hidden_states is not None  # the original keeps its hooks
