import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import bert_config, text_dataset, vit_config
from transformers import (
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertForMaskedLM,
    BertForSequenceClassification,
    ViTForImageClassification,
)

from hf_compress import QuantizationConfig, quantize, sensitivity_report
from hf_compress.quant.modules import Int4WeightOnlyLinear, Int8DynamicLinear, Int8Embedding, Int8StaticLinear
from hf_compress.quant.serialization import MARKER

# Per-method bound on 1 - cosine(float logits, quantized logits) for tiny random models.
BOUNDS = {"int8_dynamic": 2e-3, "int8_static": 5e-3, "int8_weight_only": 1e-3, "int4_weight_only": 3e-2}
METHODS = sorted(BOUNDS)


def _text_model():
    torch.manual_seed(0)
    return BertForSequenceClassification(bert_config(num_labels=8)).eval()


def _vision_model():
    torch.manual_seed(0)
    return ViTForImageClassification(vit_config(num_labels=8)).eval()


def _text_batches(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(1, 64, (4, 12), generator=g),
            "attention_mask": torch.ones(4, 12, dtype=torch.long),
        }
        for _ in range(n)
    ]


def _vision_batches(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{"pixel_values": torch.randn(4, 1, 16, 16, generator=g)} for _ in range(n)]


CASES = {"text": (_text_model, _text_batches, AutoModelForSequenceClassification),
         "vision": (_vision_model, _vision_batches, AutoModelForImageClassification)}  # fmt: skip


def _cos_error(a, b):
    return float(1 - torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).mean())


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("method", METHODS)
def test_method_is_close_to_float_and_round_trips(tmp_path, kind, method):
    build, batches, auto = CASES[kind]
    model = build()
    inputs = batches(1, seed=7)[0]
    with torch.no_grad():
        reference = model(**inputs).logits
    config = QuantizationConfig(method=method, group_size=16)
    quantized = quantize(model, config, batches() if method == "int8_static" else None)
    with torch.no_grad():
        out = quantized(**inputs).logits
    assert _cos_error(reference, out) < BOUNDS[method]
    assert 0 < _cos_error(reference, out) or method == "int8_weight_only"  # something was quantized
    quantized.save_pretrained(tmp_path)
    reloaded = auto.from_pretrained(tmp_path)
    assert reloaded.is_quantized
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, out, rtol=0, atol=0)
    names = {n: type(m) for n, m in reloaded.named_modules()}
    assert {type(m) for n, m in quantized.named_modules()} <= set(names.values()) | {type(quantized)}


@pytest.mark.parametrize("method", METHODS)
def test_quantized_model_pickles_and_deepcopies(tmp_path, method):
    """torch.save(model) / torch.load and copy.deepcopy work after a forward filled the packed-weight cache."""
    import copy

    model = quantize(_text_model(), QuantizationConfig(method=method, group_size=16), _text_batches())
    inputs = _text_batches(1, seed=7)[0]
    with torch.no_grad():
        out = model(**inputs).logits  # packs the fbgemm weights
    torch.save(model, tmp_path / "model.pt")
    for clone in (torch.load(tmp_path / "model.pt", weights_only=False), copy.deepcopy(model)):
        with torch.no_grad():
            torch.testing.assert_close(clone(**inputs).logits, out, rtol=0, atol=0)


def test_int8_checkpoint_is_about_a_quarter_of_float(tmp_path):
    torch.manual_seed(0)  # wide enough that per-row scales and the JSON header do not dominate
    model = BertForSequenceClassification(bert_config(hidden_size=128, intermediate_size=512, vocab_size=2000)).eval()
    model.save_pretrained(tmp_path / "float")
    quantize(model, QuantizationConfig()).save_pretrained(tmp_path / "int8")
    size = lambda d: sum(f.stat().st_size for f in (tmp_path / d).iterdir())  # noqa: E731
    assert size("int8") < 0.30 * size("float")
    assert isinstance(model.bert.embeddings.word_embeddings, Int8Embedding)


def test_loading_without_the_plugin_fails_loudly(tmp_path):
    quantize(_text_model(), QuantizationConfig()).save_pretrained(tmp_path)
    code = (
        "import sys; from transformers import AutoModelForSequenceClassification as A\n"
        "A.from_pretrained(sys.argv[1]); print('LOADED WITHOUT ERROR')"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "warning"}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "LOADED WITHOUT ERROR" not in result.stdout
    assert MARKER in result.stdout + result.stderr  # the load report names what to do
    assert "import_hf_compress" in MARKER


def test_masked_lm_keeps_the_tied_embedding_and_decoder_in_float(tmp_path):
    torch.manual_seed(0)
    model = BertForMaskedLM(bert_config()).eval()
    quantize(model, QuantizationConfig())
    assert isinstance(model.bert.embeddings.word_embeddings, torch.nn.Embedding)
    assert isinstance(model.cls.predictions.decoder, torch.nn.Linear)
    assert isinstance(model.bert.embeddings.position_embeddings, Int8Embedding)
    model.save_pretrained(tmp_path)
    ids = torch.randint(1, 64, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(
            AutoModelForMaskedLM.from_pretrained(tmp_path)(input_ids=ids).logits, model(input_ids=ids).logits
        )


def test_config_round_trips_through_dict_and_json():
    config = QuantizationConfig(
        method="int8_static", exclude=["*classifier*"], observer="percentile", smoothquant_alpha=0.5
    )
    again = QuantizationConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert config.to_dict()["_type"] == "QuantizationConfig" and config.to_dict()["_version"] == 1


@pytest.mark.parametrize(
    "payload, message",
    [
        (
            {"_type": "QuantizationConfig", "_version": 1, "_data": {"bits": 3}},
            r"Unknown QuantizationConfig fields \['bits'\]",
        ),
        ({"_type": "QuantizationConfig", "_version": 99, "_data": {}}, "written by a newer hf_compress"),
        ({"method": "int8_dynamic"}, "Not a serialized QuantizationConfig"),
    ],
)
def test_config_from_bad_dicts(payload, message):
    with pytest.raises(ValueError, match=message):
        QuantizationConfig.from_dict(payload)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="int2"), "method='int2' is not supported"),
        (dict(observer="mse"), "observer='mse' is not supported"),
        (dict(group_size=7), "group_size must be an even number"),
        (dict(smoothquant_alpha=1.5), r"smoothquant_alpha must be in \[0, 1\]"),
        (
            dict(method="int4_weight_only", smoothquant_alpha=0.5),
            "smoothquant_alpha applies to int8_dynamic / int8_static",
        ),
        (dict(error_budget=-1.0), "error_budget must be a positive number"),
        (dict(include=[3]), "include must be a list of module-name globs"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantizationConfig(**kwargs)


def test_include_exclude_and_keep_fp32_are_honoured():
    model = _text_model()
    config = QuantizationConfig(
        include=["bert.encoder.layer.*"],
        exclude=["*.attention.self.query"],
        keep_fp32=["bert.encoder.layer.3.*"],
        quantize_embeddings=False,
    )
    quantize(model, config)
    layer0, layer3 = model.bert.encoder.layer[0], model.bert.encoder.layer[3]
    assert isinstance(layer0.attention.self.key, Int8DynamicLinear)
    assert isinstance(layer0.attention.self.query, torch.nn.Linear)
    assert isinstance(layer3.intermediate.dense, torch.nn.Linear)
    assert isinstance(model.classifier, torch.nn.Linear) and isinstance(model.bert.pooler.dense, torch.nn.Linear)
    assert isinstance(model.bert.embeddings.word_embeddings, torch.nn.Embedding)


def test_quantizing_an_unsupported_module_is_an_error():
    with pytest.raises(
        ValueError,
        match="include pattern '\\*LayerNorm' matches only modules that cannot be quantized \\(LayerNorm\\)",
    ):
        quantize(_text_model(), QuantizationConfig(include=["*LayerNorm"]))
    with pytest.raises(ValueError, match="No Linear layer matches"):
        quantize(_text_model(), QuantizationConfig(include=["does.not.exist"]))


def test_quantizing_twice_is_an_error():
    model = quantize(_text_model(), QuantizationConfig())
    with pytest.raises(ValueError, match="already quantized"):
        quantize(model, QuantizationConfig())


def test_int4_group_size_must_divide_the_layer():
    with pytest.raises(ValueError, match="not a multiple of group_size=48"):
        quantize(_text_model(), QuantizationConfig(method="int4_weight_only", group_size=48))


@pytest.mark.parametrize(
    "data, message",
    [
        (None, "needs calibration_data"),
        ([], "calibration_data is empty"),
        (text_dataset(0), "calibration_data is empty"),
        (text_dataset(8).remove_columns("input_ids"), "calibration_data has no 'input_ids' column"),
        ([{"pixel_values": torch.zeros(1)}], "calibration batch has no 'input_ids'"),
    ],
)
def test_calibration_errors(data, message):
    with pytest.raises(ValueError, match=message):
        quantize(_text_model(), QuantizationConfig(method="int8_static"), data)


def test_static_calibration_from_a_dataset_sets_input_ranges():
    model = quantize(
        _text_model(), QuantizationConfig(method="int8_static", observer="percentile"), text_dataset(32, padded=False)
    )
    query = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(query, Int8StaticLinear) and float(query.input_scale) != 1.0


def test_smoothquant_reduces_error_on_activation_outliers():
    def build():
        model = _text_model()
        with torch.no_grad():  # an outlier channel in the FFN input, as real BERTs have after GELU
            model.bert.encoder.layer[1].intermediate.dense.bias[5] = 40.0
        return model

    inputs = _text_batches(1, seed=9)[0]
    with torch.no_grad():
        reference = build()(**inputs).logits
        plain = quantize(build(), QuantizationConfig(method="int8_static"), _text_batches())(**inputs).logits
        smooth = quantize(build(), QuantizationConfig(method="int8_static", smoothquant_alpha=0.5), _text_batches())(
            **inputs
        ).logits
    assert _cos_error(reference, smooth) < _cos_error(reference, plain)


def test_sensitivity_report_and_error_budget():
    model = _text_model()
    report = sensitivity_report(model, QuantizationConfig(method="int4_weight_only", group_size=16), _text_batches())
    errors = [e for _, e in report]
    assert errors == sorted(errors, reverse=True) and len(report) == 4 * 6 + 2
    assert all(isinstance(m, torch.nn.Linear) for _, m in model.named_modules() if _.endswith("query"))  # restored
    budget = errors[0] * 0.5
    quantize(model, QuantizationConfig(method="int4_weight_only", group_size=16, error_budget=budget), _text_batches())
    kept = model.config.quantization_config.user_config["_data"]["keep_fp32"]
    assert report[0][0] in kept
    assert isinstance(model.get_submodule(report[0][0]), torch.nn.Linear)
    assert isinstance(model.get_submodule(report[-1][0]), Int4WeightOnlyLinear)


def test_pruned_model_quantizes_and_round_trips(tmp_path):
    from hf_compress import slice_model
    from hf_compress.models.structure import model_structure
    from hf_compress.prune.masks import StructureMasks

    model = _text_model()
    masks = StructureMasks.full(model_structure(model))
    masks.hidden[16:] = 0
    masks.heads[:, 2:] = 0
    masks.ffn[:, 32:] = 0
    small = quantize(slice_model(model, masks).eval(), QuantizationConfig())
    small.save_pretrained(tmp_path)
    ids = torch.randint(1, 64, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(
            AutoModelForSequenceClassification.from_pretrained(tmp_path)(input_ids=ids).logits,
            small(input_ids=ids).logits,
        )


def test_calibration_with_a_padding_collator(tmp_path):
    from transformers import BertTokenizerFast, DataCollatorWithPadding

    tokenizer = BertTokenizerFast(
        vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"])}
    )
    data = text_dataset(16)  # the collator returns a BatchEncoding (a Mapping, not a dict)
    model = quantize(_text_model(), QuantizationConfig(method="int8_static", smoothquant_alpha=0.5), data,
                     collate_fn=DataCollatorWithPadding(tokenizer))  # fmt: skip
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, Int8StaticLinear)
