"""ONNX export: fp32 and int8 exports reproduce the PyTorch model on ONNX Runtime; bad input fails in one line."""

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import VOCAB, bert_config, vit_config

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from transformers import (  # noqa: E402
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertTokenizerFast,
    ViTForImageClassification,
)

from hf_compress import (  # noqa: E402
    QuantizationConfig,
    RNNStudentConfig,
    RNNStudentForSequenceClassification,
    quantize,
    slice_model,
)
from hf_compress.cli import check_push_folder, main  # noqa: E402
from hf_compress.export import ExportError, export_onnx  # noqa: E402
from hf_compress.export.check import verify  # noqa: E402
from hf_compress.export.onnx import sample_inputs  # noqa: E402
from hf_compress.models.structure import model_structure  # noqa: E402
from hf_compress.prune.masks import StructureMasks, keep_top  # noqa: E402
from hf_compress.quant.modules import (  # noqa: E402
    Int4WeightOnlyLinear,
    Int8DynamicLinear,
    Int8StaticLinear,
    Int8WeightOnlyLinear,
)

FP32_TOL = 1e-4
SMALL = dict(num_hidden_layers=2)  # the exporter traces every layer: two keep the tests fast


def _bert(cls=BertForSequenceClassification, **overrides):
    torch.manual_seed(0)
    return cls(bert_config(**SMALL, **overrides)).eval()


def _vit():
    torch.manual_seed(0)
    return ViTForImageClassification(vit_config(**SMALL)).eval()


def _pruned():
    model = _bert()
    masks = StructureMasks.full(model_structure(model))
    g = torch.Generator().manual_seed(0)
    masks.load_state_dict({"hidden": keep_top(torch.randn(32, generator=g), masks.hidden, 16),
                           "heads": keep_top(torch.randn(2, 4, generator=g), masks.heads, 2),
                           "ffn": keep_top(torch.randn(2, 64, generator=g), masks.ffn, 40)})  # fmt: skip
    return slice_model(model, masks).eval()


def _ort_vs_torch(path, model, inputs, outputs):
    """Max |diff| and argmax agreement on inputs of another shape than the export's (dynamic axes)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(outputs, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        ref = model(**inputs)
    diff = max(float((torch.from_numpy(g) - ref[n]).abs().max()) for g, n in zip(got, outputs))
    agree = min(float((torch.from_numpy(g).argmax(-1) == ref[n].argmax(-1)).float().mean())
                for g, n in zip(got, outputs))  # fmt: skip
    return diff, agree


FP32_CASES = {
    "bert-sequence": (_bert, ["logits"]),
    "bert-token": (lambda: _bert(BertForTokenClassification), ["logits"]),
    "bert-qa": (lambda: _bert(BertForQuestionAnswering, num_labels=2), ["start_logits", "end_logits"]),
    "bert-pruned": (_pruned, ["logits"]),
    "vit-image": (_vit, ["logits"]),
}


@pytest.mark.parametrize("name", sorted(FP32_CASES))
def test_fp32_export_matches_pytorch(tmp_path, name):
    build, outputs = FP32_CASES[name]
    model = build()
    report = export_onnx(model, tmp_path)
    assert report.precision == "fp32" and report.outputs == outputs and report.passed
    assert report.max_abs_diff <= FP32_TOL and report.fidelity == 1.0
    stored = json.loads((tmp_path / "onnx_export.json").read_text())
    assert stored["max_abs_diff"] == report.max_abs_diff and stored["num_samples"] >= 32
    for batch, length in ((1, 7), (5, 20)):  # shapes never seen by the exporter
        diff, agree = _ort_vs_torch(tmp_path / "model.onnx", model, sample_inputs(model, report.inputs, batch, length),
                                    outputs)  # fmt: skip
        assert diff <= FP32_TOL and agree == 1.0
    assert "## ONNX" in (tmp_path / "README.md").read_text()
    assert "quantization_config" not in json.loads((tmp_path / "config.json").read_text())
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    if name.startswith("bert"):  # ORT's transformer fusions: one Attention kernel per layer, in the saved graph
        assert report.fused_ops["Attention"] == 2 and {"Attention", "SkipLayerNormalization"} <= ops
        # ONNX's own tools accept the fused graph (ORT's quantizer runs shape inference on it first)
        onnx.shape_inference.infer_shapes_path(str(tmp_path / "model.onnx"), str(tmp_path / "inferred.onnx"))
    else:
        assert "SkipLayerNormalization" in ops and "Attention" not in ops
    assert stored["fused_ops"] == report.fused_ops


def test_fusion_can_be_turned_off_and_a_fused_graph_that_fails_the_check_is_not_kept(tmp_path, monkeypatch):
    from hf_compress.export import onnx as export_module

    plain = export_onnx(_bert(), tmp_path / "plain", optimize=False)
    assert plain.fused_ops == {} and "Attention" not in {n.op_type for n in onnx.load(plain.onnx_path).graph.node}
    other = onnx.load(plain.onnx_path)  # a graph of the right interface but other weights: fails the check
    for init in other.graph.initializer:
        if init.name.endswith("classifier.bias") or "dense.bias" in init.name:
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) + 1.0, init.name))
    monkeypatch.setattr(export_module, "fuse", lambda proto, model, quantized: (other, {"Attention": 2}))
    report = export_onnx(_bert(), tmp_path / "kept")
    assert report.passed and report.fused_ops == {} and report.max_abs_diff <= FP32_TOL
    assert not list((tmp_path / "kept").glob("fused-*"))
    broken = onnx.load(plain.onnx_path)  # a fused graph ORT cannot even load: the plain graph stays, no leftovers
    broken.graph.node[0].op_type = "NoSuchOp"
    monkeypatch.setattr(export_module, "fuse", lambda proto, model, quantized: (broken, {"Attention": 2}))
    report = export_onnx(_bert(), tmp_path / "broken")
    assert report.passed and report.fused_ops == {} and (tmp_path / "broken" / "onnx_export.json").is_file()
    assert not list((tmp_path / "broken").glob("fused-*"))


def _calibration(model, n=3):
    names = ["pixel_values"] if hasattr(model.config, "image_size") else ["input_ids", "attention_mask"]
    return [sample_inputs(model, names, 4, 12, seed=10 + i) for i in range(n)]


INT8_CASES = {  # name -> (model, method, an op each quantized layer has once, dynamic_activations)
    "bert-int8_dynamic": (_bert, "int8_dynamic", "QuantizeLinear", "torch"),
    "bert-int8_dynamic-ort": (_bert, "int8_dynamic", "DynamicQuantizeLinear", "ort"),
    "bert-int8_static": (_bert, "int8_static", "QuantizeLinear", "torch"),
    "bert-int8_weight_only": (_bert, "int8_weight_only", None, "torch"),
    "bert-int4_weight_only": (_bert, "int4_weight_only", "MatMulNBits", "torch"),
    "vit-int8_static": (_vit, "int8_static", "QuantizeLinear", "torch"),
    "pruned-int8_dynamic": (_pruned, "int8_dynamic", "MatMulInteger", "torch"),
}


@pytest.mark.parametrize("name", sorted(INT8_CASES))
def test_quantized_export_carries_the_same_decisions(tmp_path, name):
    build, method, op, dynamic = INT8_CASES[name]
    model = build()
    config = QuantizationConfig(method=method, group_size=16, keep_fp32=["classifier"])
    quantized = quantize(model, config, _calibration(model) if method == "int8_static" else None)
    report = export_onnx(quantized, tmp_path / "onnx", dynamic_activations=dynamic)
    assert report.precision == method and report.passed and report.fidelity >= 0.99
    if dynamic == "torch":  # the same integer arithmetic as fbgemm: only float rounding differs (a rare row
        # crosses a rounding boundary of an activation and moves by one quantization step)
        assert report.median_abs_diff <= 1e-6 and report.max_abs_diff <= 1e-3
    kinds = (Int8DynamicLinear, Int8StaticLinear, Int8WeightOnlyLinear, Int4WeightOnlyLinear)
    expected = {n for n, m in quantized.named_modules() if isinstance(m, kinds)}
    assert set(report.quantized_layers) == expected and "classifier" not in expected
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    if op:
        assert ops.count(op) == len(expected)
    assert "Attention" not in ops  # attention fusion would pack fp32 Q/K/V: off for quantized graphs
    weights = {i.name: i for i in graph.initializer}
    some_layer = sorted(expected)[0]
    stored = weights[f"{some_layer}.weight_q4" if method == "int4_weight_only" else f"{some_layer}.weight_q"]
    assert stored.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)  # the checkpoint's integers
    layer = quantized.get_submodule(some_layer)
    scale = onnx.numpy_helper.to_array(weights[f"{some_layer}.weight_scale"]).reshape(-1).copy()
    torch.testing.assert_close(torch.from_numpy(scale), layer.weight_scale.reshape(-1), rtol=0, atol=0)
    if method == "int8_static":
        x_scale = onnx.numpy_helper.to_array(weights[f"{some_layer}.input_scale"])
        assert x_scale.item() == float(layer.input_scale)
    # the classifier was kept in fp32 and stays a float MatMul / Gemm on its float weight
    assert not any(i.startswith("classifier") and i.endswith("_q") for i in weights)
    stored_bytes = sum(onnx.numpy_helper.to_array(i).nbytes for i in graph.initializer)
    assert stored_bytes < 0.5 * sum(p.numel() * 4 for p in build().parameters())  # the weights stay integers


def test_disagreements_on_near_ties_are_counted_apart():
    class Session:
        def get_inputs(self):
            return [SimpleNamespace(name="x")]

        def run(self, names, feeds):
            return [np.array([[1.0, 0.0], [0.49, 0.50], [0.0, 0.2]], dtype=np.float32)]

    reference = torch.tensor([[1.0, 0.0], [0.50, 0.49], [3.0, 0.0]])
    checked = verify(Session(), lambda **inputs: {"logits": reference}, {"x": torch.zeros(3)}, ["logits"])
    assert checked["fidelity"] == pytest.approx(1 / 3) and checked["num_samples"] == 3
    assert checked["near_ties"] == 1  # row 2: margin 0.01 within 2 x the median difference; row 3: a real error
    assert checked["max_abs_diff"] == pytest.approx(3.0)


def test_unknown_dynamic_activation_mode_is_refused(tmp_path):
    with pytest.raises(ExportError, match=r"dynamic_activations='fast' is not supported; choose one of"):
        export_onnx(_bert(), tmp_path, dynamic_activations="fast")


def test_int4_group_size_that_ort_cannot_run_is_refused(tmp_path):
    quantized = quantize(_bert(), QuantizationConfig(method="int4_weight_only", group_size=8))
    with pytest.raises(ExportError, match="MatMulNBits needs a power of two >= 16"):
        export_onnx(quantized, tmp_path)


def _tokenizer(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCAB - 5)]
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)})  # (vocab_file= is ignored in v5)


def test_cli_exports_a_stage_folder_with_its_tokenizer_and_push_accepts_it(tmp_path, capsys):
    model = quantize(_bert(), QuantizationConfig(method="int8_dynamic"))
    model.save_pretrained(tmp_path / "stage")
    _tokenizer(tmp_path).save_pretrained(tmp_path / "stage")
    (tmp_path / "stage" / "README.md").write_text("---\nlibrary_name: transformers\ntags:\n- hf-compress\n---\n\n"
                                                  "# my stage\n\nnumbers\n")  # fmt: skip
    assert main(["export", str(tmp_path / "stage"), "--format", "onnx", "--output-dir", str(tmp_path / "out")]) == 0
    assert "fidelity" in capsys.readouterr().out
    out = tmp_path / "out"
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()
    readme = (out / "README.md").read_text()
    meta, body = readme[4:].split("\n---\n", 1)
    assert yaml.safe_load(meta) == {"library_name": "transformers", "tags": ["hf-compress", "onnx"]}
    assert body.startswith("# my stage") and "## ONNX" in body and "int8_dynamic" in body
    assert "ORTModelForSequenceClassification.from_pretrained" in body
    files = check_push_folder(out)
    assert "model.onnx" in files and "onnx_export.json" in files
    (out / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(FileNotFoundError, match="is not a valid ONNX model"):
        check_push_folder(out)


def test_cli_rejects_a_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["export", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a model folder (no config.json)" in err and len(err.splitlines()) == 1
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def _sentence_folder(path, mode: str, normalize: bool) -> None:
    """A sentence-transformers pipeline beside a saved encoder: Transformer, Pooling(mode), maybe Normalize."""
    kinds = ["Transformer", "Pooling"] + (["Normalize"] if normalize else [])
    folders = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize"}
    modules = [{"idx": i, "name": str(i), "path": folders[kind], "type": f"sentence_transformers.models.{kind}"}
               for i, kind in enumerate(kinds)]  # fmt: skip
    (path / "1_Pooling").mkdir()
    flags = {"pooling_mode_cls_token": mode == "cls", "pooling_mode_mean_tokens": mode == "mean"}
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **flags}))
    (path / "modules.json").write_text(json.dumps(modules))


@pytest.mark.parametrize(("pipeline", "mode", "normalize"), [(False, "mean", False), (True, "cls", True),
                                                             (True, "mean", True)])  # fmt: skip
@pytest.mark.parametrize("method", [None, "int8_dynamic"])
def test_a_bare_encoder_exports_as_an_embedder_pooling_as_its_pipeline_does(tmp_path, pipeline, mode, normalize,
                                                                             method):  # fmt: skip
    """No task head: the graph returns the sentence embedding (the sentence-transformers pipeline's pooling and
    normalisation, or the mean of the real tokens without one) and the token states, checked against PyTorch."""
    import onnxruntime as ort

    torch.manual_seed(0)
    model = BertModel(bert_config(**SMALL)).eval()
    if method:
        model = quantize(model, QuantizationConfig(method=method))
    model.save_pretrained(tmp_path / "base")
    if pipeline:
        _sentence_folder(tmp_path / "base", mode, normalize)
    report = export_onnx(tmp_path / "base", tmp_path / "out")
    assert report.passed and report.outputs == ["sentence_embedding", "token_embeddings"]
    assert report.min_cosine > 0.9999 and report.pooling.startswith(mode)
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    inputs = sample_inputs(model, report.inputs, batch=4, length=10, seed=5)
    embedding, tokens = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    expected = hidden[:, 0] if mode == "cls" else (hidden * mask).sum(1) / mask.sum(1)
    expected = torch.nn.functional.normalize(expected, dim=-1) if normalize else expected
    tolerance = 1e-4 if method is None else 5e-2
    torch.testing.assert_close(torch.from_numpy(embedding), expected, atol=tolerance, rtol=tolerance)
    assert tokens.shape == tuple(hidden.shape)
    readme = (tmp_path / "out" / "README.md").read_text()
    assert readme.startswith("---\ntags:\n- onnx\n---\n") and "An embedder" in readme and "ORTModelFor" not in readme
    assert bool(np.allclose(np.linalg.norm(embedding, axis=-1), 1.0, atol=1e-4)) == normalize


@torch.library.custom_op("hfc_test::opaque", mutates_args=())
def _opaque(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@_opaque.register_fake
def _(x):
    return torch.empty_like(x)


class _OpaqueHead(BertForSequenceClassification):
    def forward(self, **kwargs):
        out = super().forward(**kwargs)
        out["logits"] = _opaque(out["logits"])
        return out


def test_an_operation_onnx_cannot_express_is_a_one_line_error(tmp_path):
    torch.manual_seed(0)
    model = _OpaqueHead(bert_config(**SMALL)).eval()
    with pytest.raises(ExportError, match=r"torch.onnx.export cannot export _OpaqueHead: .*") as info:
        export_onnx(model, tmp_path)
    assert "\n" not in str(info.value)


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch, capsys):
    _bert().save_pretrained(tmp_path / "stage")
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ExportError, match=r"needs onnxruntime: pip install 'hf-compress\[onnx\]'"):
        export_onnx(tmp_path / "stage", tmp_path / "out")
    assert main(["export", str(tmp_path / "stage"), "--output-dir", str(tmp_path / "out")]) == 2
    assert "pip install 'hf-compress[onnx]'" in capsys.readouterr().err


def _family(name):
    import transformers as T

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    torch.manual_seed(0)
    if name == "roberta":
        config = T.RobertaConfig(vocab_size=VOCAB, max_position_embeddings=70, **small)
        return T.RobertaForSequenceClassification(config)
    if name == "distilbert":
        config = T.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64)
        return T.DistilBertForSequenceClassification(config)
    if name == "electra":
        return T.ElectraForSequenceClassification(T.ElectraConfig(vocab_size=VOCAB, embedding_size=32, **small))
    return T.DeiTForImageClassification(T.DeiTConfig(image_size=16, patch_size=4, num_channels=1, **small))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["roberta", "distilbert", "electra", "deit"])
def test_other_encoder_families_export_as_is(tmp_path, name):
    """Families beyond the BERT / ViT test matrix: fp32 and int8_dynamic exports match PyTorch too."""
    model = _family(name).eval()
    report = export_onnx(model, tmp_path / "fp32")
    assert report.passed and report.max_abs_diff <= FP32_TOL
    quantized = quantize(model, QuantizationConfig(method="int8_dynamic"))
    report = export_onnx(quantized, tmp_path / "int8")
    assert report.passed and report.fidelity >= 0.99 and report.quantized_layers


def _rnn(cell: str, pooling: str) -> RNNStudentForSequenceClassification:
    torch.manual_seed(0)
    config = RNNStudentConfig(vocab_size=VOCAB, embedding_size=8, hidden_size=6, num_layers=2, num_labels=3,
                              classifier_hidden_size=5, dropout=0.0, cell=cell, pooling=pooling)  # fmt: skip
    return RNNStudentForSequenceClassification(config).eval()


@pytest.mark.parametrize(("cell", "pooling"), [("lstm", "max"), ("gru", "last"), ("rnn", "mean")])
def test_rnn_student_exports_and_matches_on_padded_batches(tmp_path, cell, pooling):
    model = _rnn(cell, pooling)
    # the teacher's tokenizer makes token_type_ids, which the RNN ignores: the graph and the check go without it
    report = export_onnx(model, tmp_path / "fp32", processor=_tokenizer(tmp_path))
    assert report.precision == "fp32" and report.passed and report.inputs == ["input_ids", "attention_mask"]
    assert report.max_abs_diff <= FP32_TOL and report.fidelity == 1.0
    ids = torch.randint(1, VOCAB, (4, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :4], mask[2, 6:], mask[3] = 0, 0, 0  # left padding, right padding, nothing but padding
    diff, agree = _ort_vs_torch(tmp_path / "fp32" / "model.onnx", model,
                                {"input_ids": ids * mask, "attention_mask": mask}, ["logits"])  # fmt: skip
    assert diff <= FP32_TOL and agree == 1.0
    quantized = quantize(model, QuantizationConfig(method="int8_dynamic"))
    report = export_onnx(quantized, tmp_path / "int8")
    assert report.precision == "int8_dynamic" and report.passed and report.fidelity >= 0.99
    assert "pre_classifier" in report.quantized_layers and report.max_abs_diff <= 1e-4


def test_verification_inputs_must_cover_the_model_inputs(tmp_path):
    with pytest.raises(
        ExportError, match=r"inputs lack \['attention_mask', 'token_type_ids'\], which the exported model takes"
    ):
        export_onnx(_bert(), tmp_path, inputs={"input_ids": torch.ones(2, 5, dtype=torch.long)})


def test_the_int8_check_judges_disagreements_against_the_models_own_noise(tmp_path):
    """A sound int8 export passes; one with a wrong weight scale in one layer fails: ORT strays from PyTorch by
    more than the model's own int8 noise, which is measured without the graph."""
    good = export_onnx(
        quantize(_bert(), QuantizationConfig(method="int8_dynamic")), tmp_path / "good", dynamic_activations="ort"
    )
    assert good.passed and good.num_samples == 128 and good.int8_noise > 0
    assert good.median_abs_diff <= 4 * good.int8_noise + 1e-4 and good.rows_beyond_noise <= 1
    import hf_compress.export.onnx as onnx_export

    real = onnx_export.rewrite_quantized

    def wrong_scale(proto, plan, mode, **kwargs):
        proto = real(proto, plan, mode, **kwargs)
        scale = next(i for i in proto.graph.initializer if i.name.endswith("weight_scale"))
        values = onnx.numpy_helper.to_array(scale) * 1.5
        scale.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), scale.name))
        return proto

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnx_export, "rewrite_quantized", wrong_scale)
        broken = export_onnx(
            quantize(_bert(), QuantizationConfig(method="int8_dynamic")),
            tmp_path / "broken",
            dynamic_activations="ort",
        )
    assert not broken.passed and broken.median_abs_diff > 4 * broken.int8_noise
    assert broken.int8_noise == pytest.approx(good.int8_noise)  # the noise does not depend on the graph


def test_near_ties_within_the_int8_noise_pass_and_clear_disagreements_fail():
    """100 rows, 10 of them undecided (margin 1e-5): ORT flipping those is the model's own int8 noise (1e-4) and
    passes although argmax agreement is 0.90; flipping 10 decided rows (margin 1.0) fails."""
    from hf_compress.export.check import passes

    reference = torch.zeros(100, 2)
    reference[:, 0] = 1.0
    reference[:10, 1] = 1.0 - 1e-5

    def session_returning(values):
        return SimpleNamespace(get_inputs=lambda: [SimpleNamespace(name="x")], run=lambda names, feeds: [values])

    def check(values):
        return verify(session_returning(values.numpy()), lambda **i: {"logits": reference}, {"x": torch.zeros(1)},
                      ["logits"], noise={"logits": torch.full((100,), 1e-4)})  # fmt: skip

    flipped = reference.clone()
    flipped[:10] = flipped[:10].flip(-1)
    checked = check(flipped)
    assert checked["fidelity"] == pytest.approx(0.9) and checked["near_ties"] == 10 and passes(checked, True)
    wrong = reference.clone()
    wrong[10:20] = torch.tensor([0.0, 1.0])
    checked = check(wrong)
    assert checked["near_ties"] == 0 and not passes(checked, quantized=True)
    # wrong on every third row only (as a graph that mishandles left padding): same argmax, median |diff| 0
    shifted = reference.clone()
    shifted[::3] += 0.5
    checked = check(shifted)
    assert checked["fidelity"] == 1.0 and checked["median_abs_diff"] == 0 and checked["rows_beyond_noise"] == 34
    assert not passes(checked, quantized=True)


def test_a_fused_graph_has_a_type_on_every_value(tmp_path):
    """ORT's contrib ops (EmbedLayerNormalization, Attention, ...) are typed too, so tools that post-process the
    export (optimum's ORTQuantizer looks up each weight's data type) find them."""
    report = export_onnx(_bert(), tmp_path / "onnx")
    assert report.fused_ops.get("Attention")
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph
    typed = {v.name for v in [*graph.value_info, *graph.input, *graph.output]} | {i.name for i in graph.initializer}
    untyped = [out for node in graph.node for out in node.output if out and out not in typed]
    assert untyped == []


def test_a_check_on_no_rows_is_refused(tmp_path, capsys):
    with pytest.raises(ExportError, match="num_samples must be a whole number >= 1"):
        export_onnx(_bert(), tmp_path / "onnx", num_samples=0)
    _bert().save_pretrained(tmp_path / "model")
    assert main(["export", str(tmp_path / "model"), "--num-samples", "0"]) == 2
    assert "num_samples must be a whole number" in capsys.readouterr().err
