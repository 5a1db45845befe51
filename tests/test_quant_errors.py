"""Quantization hardening: half-precision models and checkpoints, checkpoints whose config.json does not match
their tensors, and the bad inputs a careless user hands to `quantize()` / `sensitivity_report()`."""

import json
import warnings

import pytest
import torch
from conftest import VOCAB, bert_config, text_dataset, vit_config
from datasets import DatasetDict
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, ViTForImageClassification

from hf_compress import QuantizationConfig, quantize, sensitivity_report
from hf_compress.quant.modules import Int8DynamicLinear, Int8StaticLinear, Int8WeightOnlyLinear

# 1 - cosine between a half-precision quantized model and the fp32 quantized one: the same order as the
# quantization error itself (half-precision activations change the int8 rounding of the dynamic / static kernels).
HALF_BOUNDS = {"int8_dynamic": 2e-3, "int8_static": 5e-3, "int8_weight_only": 1e-3, "int4_weight_only": 1e-3}
HALF = [torch.bfloat16, torch.float16]


def _model(num_labels=8):
    torch.manual_seed(0)
    return BertForSequenceClassification(bert_config(num_labels=num_labels)).eval()


def _batches(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(1, VOCAB, (4, 12), generator=g),
            "attention_mask": torch.ones(4, 12, dtype=torch.long),
        }
        for _ in range(n)
    ]


def _cos_error(a, b):
    return float(1 - torch.nn.functional.cosine_similarity(a.float().flatten(1), b.float().flatten(1), dim=1).mean())


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


# ------------------------------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("method", sorted(HALF_BOUNDS))
def test_quantizing_a_half_precision_model_runs_in_that_dtype(method, dtype):
    config = QuantizationConfig(method=method, group_size=16)
    inputs = _batches(1, seed=7)[0]
    reference = _logits(quantize(_model(), config, _batches()), inputs)
    half = quantize(_model().to(dtype), config, _batches())
    out = _logits(half, inputs)
    assert out.dtype == dtype
    assert _cos_error(reference, out) < HALF_BOUNDS[method]
    assert half.bert.embeddings.LayerNorm.weight.dtype == dtype  # the float parts stay in the requested dtype


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("method", ["int8_static", "int4_weight_only"])
def test_quantized_checkpoint_loads_and_casts_to_half_precision(tmp_path, method, dtype):
    config = QuantizationConfig(
        method=method, group_size=16, smoothquant_alpha=0.5 if method == "int8_static" else None
    )
    quantized = quantize(_model(), config, _batches())
    quantized.save_pretrained(tmp_path)
    inputs = _batches(1, seed=7)[0]
    reference = _logits(quantized, inputs)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, dtype=dtype)
    out = _logits(loaded, inputs)
    assert out.dtype == dtype and _cos_error(reference, out) < HALF_BOUNDS[method]
    cast = _logits(quantized.to(dtype), inputs)  # .to(dtype) on the in-memory quantized model
    assert cast.dtype == dtype and _cos_error(reference, cast) < HALF_BOUNDS[method]


def test_casting_after_a_forward_repacks_the_int8_weights():
    """The packed fbgemm weight caches the scales: a cast after the first forward must not keep the old ones."""
    torch.manual_seed(0)
    layer = Int8DynamicLinear.from_float(torch.nn.Linear(16, 8, bias=False))
    x = torch.randn(4, 16)
    layer(x)  # packs with fp32 scales
    layer.to(torch.bfloat16)
    fresh = Int8DynamicLinear(16, 8, bias=False).to(torch.bfloat16)
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x.bfloat16()), fresh(x.bfloat16()), rtol=0, atol=0)


def test_pipeline_with_dtype_runs_a_quantized_checkpoint(tmp_path):
    from transformers import BertTokenizerFast, pipeline

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCAB - 5)]
    BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(tmp_path)
    quantize(_model(num_labels=2), QuantizationConfig()).save_pretrained(tmp_path)
    classify = pipeline("text-classification", model=str(tmp_path), dtype=torch.bfloat16)
    assert classify.model.dtype == torch.bfloat16
    result = classify("w1 w2 w3")
    assert result[0]["label"] in {"LABEL_0", "LABEL_1"} and 0.0 < result[0]["score"] <= 1.0


# ---------------------------------------------------------------------------------------- silent wrong loads
def test_loading_with_a_different_num_labels_is_refused(tmp_path):
    quantize(_model(num_labels=2), QuantizationConfig()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="stores 'classifier' as a Linear 32 -> 2.*cannot be reshaped at load time"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=3)


def _edit_config(folder, edit):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config["quantization_config"])
    path.write_text(json.dumps(config))


def _set_all(key, value):
    def edit(qc):
        for spec in qc["modules"].values():
            if spec["kind"] != "embedding":
                spec[key] = value

    return edit


def _rename_method(new):
    def edit(qc):
        qc["method"] = new
        qc["user_config"]["_data"]["method"] = new
        _set_all("kind", new)(qc)

    return edit


QUERY = "bert.encoder.layer.0.attention.self.query"
TAMPERED = {
    "smooth false on smoothed weights": (
        dict(method="int8_dynamic", smoothquant_alpha=0.5),
        _set_all("smooth", False),
        r"unexpected \['input_smooth'\]",
    ),
    "smooth true on plain weights": (dict(), _set_all("smooth", True), r"missing \['input_smooth'\]"),
    "static renamed dynamic": (
        dict(method="int8_static"),
        _rename_method("int8_dynamic"),
        r"unexpected \['input_scale', 'input_zero_point'\]",
    ),
    "dynamic renamed static": (
        dict(method="int8_dynamic"),
        _rename_method("int8_static"),
        r"missing \['input_scale', 'input_zero_point'\]",
    ),
    "method differs from the modules": (
        dict(method="int8_static"),
        lambda qc: qc.update(method="int8_dynamic"),
        "method='int8_dynamic' but module .* is 'int8_static'",
    ),
    "format_version string": (dict(), lambda qc: qc.update(format_version="2"), "format_version must be a positive"),
    "format_version newer": (dict(), lambda qc: qc.update(format_version=2), "newer than this hf_compress"),
    "missing in_features": (dict(), lambda qc: qc["modules"][QUERY].pop("in_features"), "has no 'in_features'"),
    "group_size 0": (
        dict(method="int4_weight_only", group_size=16),
        _set_all("group_size", 0),
        r"group_size must be a positive integer, got 0",
    ),
    "group_size not dividing": (
        dict(method="int4_weight_only", group_size=16),
        _set_all("group_size", 6),
        "group_size=6 must be even and divide in_features=32",
    ),
    "unknown kind": (dict(), lambda qc: qc["modules"][QUERY].update(kind="int3"), "Unknown quantized module kind"),
    "module dropped from the list": (
        dict(),
        lambda qc: qc["modules"].pop(QUERY),
        "integer weights for .*query.*not listed in its quantization_config",
    ),
    "shape edited": (
        dict(),
        lambda qc: qc["modules"][QUERY].update(out_features=16),
        "needs shape|cannot be reshaped",
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_quantization_config_fails_to_load(tmp_path, case):
    kwargs, edit, message = TAMPERED[case]
    quantize(_model(), QuantizationConfig(**kwargs), _batches()).save_pretrained(tmp_path)
    AutoModelForSequenceClassification.from_pretrained(tmp_path)  # loads before the edit
    _edit_config(tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_with_the_module_name(value):
    model = _model()
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.weight[0, 3] = value
    with pytest.raises(ValueError, match=r"bert\.encoder\.layer\.1\.output\.dense\.weight holds NaN or inf"):
        quantize(model, QuantizationConfig())
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, torch.nn.Linear)  # nothing was changed


def test_non_finite_embedding_is_refused():
    model = _model()
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight[5, 0] = float("nan")
    with pytest.raises(ValueError, match="word_embeddings.weight holds NaN or inf"):
        quantize(model, QuantizationConfig())


def test_activations_that_overflow_during_calibration_are_refused():
    model = _model()
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.output.LayerNorm.weight[0] = float("inf")
    with pytest.raises(ValueError, match="The input of bert.encoder.layer.1.intermediate.dense is NaN or inf"):
        quantize(model, QuantizationConfig(method="int8_static"), _batches())


# ----------------------------------------------------------------------------------------------- API inputs
def test_a_dict_config_is_accepted():
    model = quantize(_model(), {"method": "int8_weight_only", "exclude": ["*classifier*"]})
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, Int8WeightOnlyLinear)
    assert isinstance(model.classifier, torch.nn.Linear)
    serialized = QuantizationConfig(method="int8_static").to_dict()
    static = quantize(_model(), serialized, _batches())
    assert isinstance(static.bert.encoder.layer[0].attention.self.query, Int8StaticLinear)


@pytest.mark.parametrize(
    "config, error, message",
    [
        ({"bits": 3}, ValueError, r"Unknown QuantizationConfig fields \['bits'\]"),
        ({"method": "int8_static", "group_size": "16"}, ValueError, "group_size must be an integer"),
        ("int8_dynamic", TypeError, "config must be a QuantizationConfig or a dict of its fields, got str"),
    ],
)
def test_bad_config_objects(config, error, message):
    with pytest.raises(error, match=message):
        quantize(_model(), config)


def test_a_plain_module_is_refused():
    with pytest.raises(TypeError, match="quantize\\(\\) takes a transformers PreTrainedModel, got Sequential"):
        quantize(torch.nn.Sequential(torch.nn.Linear(4, 4)), QuantizationConfig())
    with pytest.raises(TypeError, match="takes a transformers PreTrainedModel"):
        sensitivity_report(torch.nn.Linear(4, 4), QuantizationConfig(), _batches())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(group_size="16"), r"group_size must be an integer, got '16' \(str\)"),
        (dict(group_size=16.0), r"group_size must be an integer, got 16.0 \(float\)"),
        (dict(group_size=True), "group_size must be an integer"),
        (dict(quantize_embeddings="no"), "quantize_embeddings must be true or false, got 'no'"),
        (dict(num_calibration_batches=2.5), "num_calibration_batches must be an integer, got 2.5"),
        (dict(percentile="99"), "percentile must be a finite number"),
        (dict(smoothquant_alpha="0.5"), "smoothquant_alpha must be a finite number or None"),
        (dict(error_budget=float("nan")), "error_budget must be a finite number or None"),
        (dict(method=["int8_dynamic"]), r"method=\['int8_dynamic'\] is not supported"),
    ],
)
def test_config_types_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantizationConfig(**kwargs)


def test_globs_that_match_nothing_warn_with_the_glob():
    model = _model()
    with pytest.warns(UserWarning) as record:
        quantize(model, QuantizationConfig(exclude=["classifer"], keep_fp32=["*pooler*", "bert.layer.0.*"]))
    messages = [str(w.message) for w in record]
    assert any("exclude pattern 'classifer' matches no module" in m for m in messages)
    assert any("keep_fp32 pattern 'bert.layer.0.*' matches no module" in m for m in messages)
    assert not any("'*pooler*'" in m for m in messages)
    assert isinstance(model.classifier, Int8DynamicLinear)  # the typo really let the classifier be quantized
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # globs that match give no warning
        quantize(_model(), QuantizationConfig(exclude=["*classifier*"]))


def test_one_batch_dict_is_calibration_data():
    batch = _batches(1)[0]
    one = quantize(_model(), QuantizationConfig(method="int8_static"), batch)
    listed = quantize(_model(), QuantizationConfig(method="int8_static"), [batch])
    query = "bert.encoder.layer.0.attention.self.query"
    assert float(one.get_submodule(query).input_scale) == float(listed.get_submodule(query).input_scale) != 1.0


def test_one_tokenized_example_is_calibration_data():
    model = quantize(_model(), QuantizationConfig(method="int8_static"), {"input_ids": list(range(1, 13))})
    assert float(model.bert.encoder.layer[0].attention.self.query.input_scale) != 1.0


def test_a_list_of_rows_is_batched():
    rows = [{"input_ids": row.tolist(), "label": 0} for row in torch.randint(1, VOCAB, (10, 12))]
    model = quantize(_model(), QuantizationConfig(method="int8_static"), rows, batch_size=4)
    assert float(model.bert.encoder.layer[0].attention.self.query.input_scale) != 1.0
    ragged = [{"input_ids": [1, 2, 3]}, {"input_ids": [1, 2]}]
    with pytest.raises(ValueError, match="Could not batch the calibration rows.*collate_fn"):
        quantize(_model(), QuantizationConfig(method="int8_static"), ragged)
    unpadded = {"input_ids": [[1, 2, 3], [1, 2]]}  # tokenizer(texts) without padding
    with pytest.raises(ValueError, match="Could not batch calibration_data.*Pad it to one length"):
        quantize(_model(), QuantizationConfig(method="int8_static"), unpadded)


def _with(**changes):
    batch = _batches(1)[0]
    batch.update(changes)
    return [batch]


@pytest.mark.parametrize(
    "data, message",
    [
        (
            _with(input_ids=torch.full((4, 12), VOCAB)),
            r"input_ids range over \[64, 64\] but the model's vocabulary has 64",
        ),
        (_with(input_ids=torch.full((4, 12), -1)), "vocabulary has 64 tokens"),
        (
            _with(input_ids=torch.ones(4, 100, dtype=torch.long), attention_mask=torch.ones(4, 100)),
            "exceed the model's max_position_embeddings=64",
        ),
        (
            _with(token_type_ids=torch.full((4, 12), 5)),
            "token_type_ids go up to 5 but the model has type_vocab_size=2",
        ),
        (
            _with(attention_mask=torch.full((4, 12), float("nan"))),
            "calibration batch 0: attention_mask holds NaN or inf",
        ),
        (_with(input_ids=torch.ones(4, 12)), "input_ids must be integer token ids"),
        (_with(input_ids=torch.ones(2, 3, 4, dtype=torch.long)), r"input_ids must be \(batch, sequence\)"),
        (DatasetDict(train=text_dataset(8)), r"DatasetDict with splits \['train'\]; pass one split"),
        (torch.ones(4, 12, dtype=torch.long), "got Tensor; pass a Dataset, a list of row dicts or of batch dicts"),
    ],
)
def test_bad_calibration_data(data, message):
    with pytest.raises(ValueError, match=message):
        quantize(_model(), QuantizationConfig(method="int8_static"), data)


def test_nan_pixels_in_calibration_data():
    torch.manual_seed(0)
    model = ViTForImageClassification(vit_config()).eval()
    pixels = torch.randn(4, 1, 16, 16)
    pixels[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="pixel_values holds NaN or inf"):
        quantize(model, QuantizationConfig(method="int8_static"), [{"pixel_values": pixels}])


def test_raw_uint8_pixels_in_calibration_data():
    torch.manual_seed(0)
    model = ViTForImageClassification(vit_config()).eval()
    pixels = torch.randint(0, 255, (4, 1, 16, 16), dtype=torch.uint8)
    with pytest.raises(ValueError, match="pixel_values are torch.uint8, not floats; preprocess the images"):
        quantize(model, QuantizationConfig(method="int8_static"), [{"pixel_values": pixels}])


def test_sensitivity_report_bad_inputs():
    with pytest.raises(ValueError, match="sensitivity_report needs calibration_data"):
        sensitivity_report(_model(), QuantizationConfig(), None)
    with pytest.raises(ValueError, match="already quantized"):
        sensitivity_report(quantize(_model(), QuantizationConfig()), QuantizationConfig(), _batches())
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        sensitivity_report(_model(), QuantizationConfig(), text_dataset(8), batch_size=0)
    report = sensitivity_report(_model(), {"method": "int8_weight_only", "include": ["*classifier"]}, _batches())
    assert [name for name, _ in report] == ["classifier"]


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, "8"])
def test_quantize_batch_size_is_checked(batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        quantize(_model(), QuantizationConfig(method="int8_static"), text_dataset(8), batch_size=batch_size)


def test_an_int4_group_size_error_leaves_the_model_unquantized():
    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config(intermediate_size=48)).eval()  # FFN output has 48 inputs
    with pytest.raises(ValueError, match="output.dense has 48 input features, not a multiple of group_size=32"):
        quantize(model, QuantizationConfig(method="int4_weight_only", group_size=32))
    assert not any(type(m).__module__.startswith("hf_compress") for m in model.modules())
    assert not getattr(model, "is_quantized", False)


def test_an_error_budget_that_cannot_be_met_warns():
    with pytest.warns(UserWarning, match="error_budget=1.00e-12 is not met even with all layers but one in fp32"):
        config = QuantizationConfig(
            "int4_weight_only", ["classifier", "bert.pooler.dense"], group_size=16, error_budget=1e-12
        )
        quantize(_model(), config, _batches(1))


def test_percentile_at_or_below_50_is_refused():
    with pytest.raises(ValueError, match=r"percentile must be in \(50, 100\], got 50"):
        QuantizationConfig(method="int8_static", observer="percentile", percentile=50)


def test_collate_fn_must_be_callable():
    with pytest.raises(TypeError, match="collate_fn must be a callable"):
        quantize(_model(), QuantizationConfig(method="int8_static"), text_dataset(8), collate_fn="pad")
