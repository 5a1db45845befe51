"""The quantized-kind registry: bad and duplicate registrations, unknown names, every registered kind's spec
agreeing with its own layer, and a kind defined only in this file going through quantize -> save_pretrained ->
from_pretrained, its checkpoint checks and the ONNX export's refusal, without any library change."""

import json
import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from conftest import VOCAB, bert_config
from safetensors import safe_open
from torch import nn
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

import hf_compress  # noqa: F401  (registers the quantizer and the built-in kinds)
from hf_compress import QuantizationConfig, quantize
from hf_compress.export.quantized import ExportError, float_stand_ins
from hf_compress.models.support import support_table
from hf_compress.quant.kinds import (
    Calibration,
    QuantizedKind,
    UnknownQuantizedKindError,
    extra_kinds,
    get_quantized_kind,
    method_names,
    quantized_kind_names,
    register_quantized_kind,
    registered_quantized_kind,
    unregister_quantized_kind,
)
from hf_compress.quant.validation import check_linear_description

TOY = "toy_int8_per_tensor"
QUERY = "bert.encoder.layer.0.attention.self.query"


# ------------------------------------------------------------------------------------- the toy kind (test only)
class PerTensorInt8Linear(nn.Module):
    """Fake-quant Linear: int8 weights with one scale for the whole tensor, dequantized for a float matmul."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(()))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    def forward(self, x):
        weight = self.weight.to(x.dtype) * self.weight_scale.to(x.dtype)
        return F.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))


def _toy_from_float(linear, config, calibration):
    module = PerTensorInt8Linear(linear.in_features, linear.out_features, linear.bias is not None)
    weight = linear.weight.detach().float()
    scale = weight.abs().max().clamp_min(1e-8) / 127
    module.weight.copy_((weight / scale).round().clamp(-127, 127).to(torch.int8))
    module.weight_scale.fill_(float(scale))
    if linear.bias is not None:
        module.bias.copy_(linear.bias.detach())
    return module


def _toy_tensors(description):
    out, inp = description["out_features"], description["in_features"]
    expected = {"weight": ((out, inp), torch.int8), "weight_scale": ((), None)}
    if description["bias"]:
        expected["bias"] = ((out,), None)
    return expected


TOY_KIND = QuantizedKind(
    name=TOY,
    module_cls=PerTensorInt8Linear,
    from_float=_toy_from_float,
    describe=lambda m: {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None},
    build=lambda d: PerTensorInt8Linear(d["in_features"], d["out_features"], d["bias"]),
    check_description=check_linear_description,
    expected_tensors=_toy_tensors,
    help="int8 weights with one scale per tensor (a test kind)",
)


@pytest.fixture
def toy_kind():
    with registered_quantized_kind(TOY_KIND) as spec:
        yield spec
    assert TOY not in quantized_kind_names()


def _model():
    torch.manual_seed(0)
    return BertForSequenceClassification(bert_config()).eval()


def _inputs():
    g = torch.Generator().manual_seed(3)
    return {"input_ids": torch.randint(1, VOCAB, (2, 10), generator=g), "attention_mask": torch.ones(2, 10).long()}


def _logits(model):
    with torch.no_grad():
        return model(**_inputs()).logits


def _edit_config(folder, edit):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config["quantization_config"])
    path.write_text(json.dumps(config))


# ------------------------------------------------------------------------------------------------ registrations
def test_a_duplicate_name_is_refused():
    with pytest.raises(ValueError, match=r"quantized kind 'int8_dynamic' is already registered \(registered: \["):
        register_quantized_kind(get_quantized_kind("int8_dynamic"))


def test_a_second_kind_for_the_same_class_is_refused():
    twin = replace(get_quantized_kind("int8_dynamic"), name="int8_dynamic_twin")
    with pytest.raises(ValueError, match="Int8DynamicLinear is already the layer of kind 'int8_dynamic'"):
        register_quantized_kind(twin)
    assert "int8_dynamic_twin" not in quantized_kind_names()


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(name="Toy Kind"), "quantized kind name 'Toy Kind' is not valid"),
        (dict(module_cls=object), "module_cls must be an nn.Module class"),
        (dict(method=False), "a kind that is not a method needs `enabled"),
        (dict(replaces=get_quantized_kind("embedding").replaces), "a method kind replaces nn.Linear layers"),
    ],
)
def test_bad_specs_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        register_quantized_kind(replace(TOY_KIND, **changes))
    assert TOY not in quantized_kind_names()


def test_register_takes_a_spec():
    with pytest.raises(TypeError, match="register_quantized_kind takes a QuantizedKind, got dict"):
        register_quantized_kind({"name": TOY})


def test_an_unknown_kind_lists_the_registered_ones():
    known = quantized_kind_names()
    assert {"embedding", "int8_dynamic", "int8_static", "int8_weight_only", "int4_weight_only"} <= set(known)
    with pytest.raises(UnknownQuantizedKindError, match=re.escape(f"registered kinds: {known}")) as err:
        get_quantized_kind("int3")
    assert "unknown quantized kind 'int3'" in str(err.value)
    with pytest.raises(UnknownQuantizedKindError, match="unknown quantized kind"):
        unregister_quantized_kind("int3")
    with pytest.raises(ValueError, match=re.escape(f"method='int3' is not supported; choose one of {method_names()}")):
        QuantizationConfig(method="int3")


def test_methods_and_extra_kinds_come_from_the_registry():
    assert {"int4_weight_only", "int8_dynamic", "int8_static", "int8_weight_only"} <= set(method_names())
    assert "embedding" in [kind.name for kind in extra_kinds()] and "embedding" not in method_names()
    assert all(get_quantized_kind(name).method for name in method_names())
    assert f"Quantization ({len(method_names())} methods)" in support_table()


# ------------------------------------------------------------------------------- every registered kind, alone
def _float_module(kind):
    torch.manual_seed(0)
    return nn.Embedding(12, 8, padding_idx=0) if kind.replaces.cls is nn.Embedding else nn.Linear(32, 16)


@pytest.mark.parametrize("name", quantized_kind_names())
def test_each_kind_rebuilds_from_its_saved_description(name):
    """describe -> check_description -> build gives an empty layer whose tensors are exactly expected_tensors, and
    which computes the same as the quantized one once it holds its state (what from_pretrained does)."""
    kind = get_quantized_kind(name)
    config = QuantizationConfig(method=name if kind.method else "int8_dynamic", group_size=16)
    calibration = Calibration(input_range=(-2.0, 3.0) if kind.needs_input_ranges else None)
    float_module = _float_module(kind)
    quantized = kind.from_float(float_module, config, calibration)
    assert type(quantized) is kind.module_cls
    description = json.loads(json.dumps({"kind": name, **kind.describe(quantized)}))  # as config.json holds it
    kind.check_description("layer", description)
    assert kind.replaces.matches(description, float_module)
    empty = kind.build(description)
    expected = kind.expected_tensors(description)
    state = quantized.state_dict()
    assert sorted(state) == sorted(expected) == sorted(empty.state_dict())
    for suffix, (shape, dtype) in expected.items():
        assert tuple(state[suffix].shape) == shape
        assert state[suffix].dtype == dtype if dtype is not None else state[suffix].is_floating_point()
    empty.load_state_dict(state)
    x = torch.randint(0, 12, (3, 5)) if kind.replaces.cls is nn.Embedding else torch.randn(3, 32)
    torch.testing.assert_close(empty(x), quantized(x), rtol=0, atol=0)


# ----------------------------------------------------------------------------------- a kind from outside, e2e
def test_a_new_kind_quantizes_saves_and_reloads(tmp_path, toy_kind):
    assert TOY in method_names() and f"Quantization ({len(method_names())} methods)" in support_table()
    model = _model()
    reference = _logits(model)
    quantized = quantize(model, QuantizationConfig(method=TOY))
    assert isinstance(quantized.get_submodule(QUERY), PerTensorInt8Linear)
    assert type(quantized.bert.embeddings.word_embeddings) is get_quantized_kind("embedding").module_cls
    out = _logits(quantized)
    assert float(1 - F.cosine_similarity(out, reference).mean()) < 1e-2

    quantized.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved["method"] == TOY and saved["user_config"]["_data"]["method"] == TOY
    assert saved["modules"][QUERY] == {"kind": TOY, "in_features": 32, "out_features": 32, "bias": True}
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        assert handle.get_slice(f"{QUERY}.weight").get_dtype() == "I8"
        assert handle.get_slice(f"{QUERY}.weight_scale").get_shape() == []

    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert isinstance(reloaded.get_submodule(QUERY), PerTensorInt8Linear) and reloaded.is_quantized
    torch.testing.assert_close(_logits(reloaded), out, rtol=0, atol=0)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda qc: qc["modules"][QUERY].update(bias=False), r"unexpected \['bias'\]"),  # expected_tensors
        (lambda qc: qc["modules"][QUERY].pop("in_features"), "has no 'in_features'"),  # check_description
        (lambda qc: qc["modules"][QUERY].update(in_features=16), "needs shape|cannot be reshaped"),
        (lambda qc: qc["modules"][QUERY].update(kind="int8_dynamic"), "method='toy_int8_per_tensor' but module"),
    ],
)
def test_a_new_kind_checkpoint_is_checked_before_it_loads(tmp_path, toy_kind, edit, message):
    quantize(_model(), QuantizationConfig(method=TOY, quantize_embeddings=False)).save_pretrained(tmp_path)
    _edit_config(tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_a_new_kind_checkpoint_needs_the_kind_registered(tmp_path):
    with registered_quantized_kind(TOY_KIND):
        quantize(_model(), QuantizationConfig(method=TOY)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"method={TOY!r} is not one of .*: upgrade hf-compress or import the plugin"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


def test_a_kind_without_onnx_lowering_is_refused_by_the_export(toy_kind):
    quantized = quantize(_model(), QuantizationConfig(method=TOY))
    with pytest.raises(ExportError, match=f"is of kind '{TOY}' \\(PerTensorInt8Linear\\), which has no ONNX lowering"):
        float_stand_ins(quantized)
