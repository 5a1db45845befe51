"""Every family x head x {distill, HomoDistil, 4 quantization methods, reload, pipeline()} on tiny configs.

Each cell either works or raises exactly the refusal that `hf_compress/models/families.py` declares: the README's
"Supported models" table is generated from that table (`hf_compress.models.support`), so what it claims is what
these cells run. Models are tiny (hidden 32, 2 layers) and built once per module; training runs 2-3 steps.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from hf_compress import (
    DistillationConfig,
    DistillationTrainer,
    HomoDistilConfig,
    HomoDistilTrainer,
    QuantizationConfig,
    make_student,
    quantize,
    sensitivity_report,
)
from hf_compress.distill import attention
from hf_compress.models import support
from hf_compress.models.families import family_of
from hf_compress.quant.serialization import MARKER

VOCAB, SEQ, IMAGE = 64, 10, 16
_TEXT = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             pad_token_id=0, bos_token_id=2, eos_token_id=3, num_labels=3)  # fmt: skip
_VISION = dict(image_size=IMAGE, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
               num_attention_heads=4, intermediate_size=64, num_labels=3)  # fmt: skip
CONFIGS = {
    "bert": _TEXT,
    "roberta": dict(_TEXT, max_position_embeddings=SEQ + 8),
    "xlm-roberta": dict(_TEXT, max_position_embeddings=SEQ + 8),
    "camembert": dict(_TEXT, max_position_embeddings=SEQ + 8),
    "electra": dict(_TEXT, embedding_size=16),  # narrower embeddings + embeddings_project
    "distilbert": dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, pad_token_id=0, num_labels=3),
    "deberta-v2": dict(
        _TEXT,
        relative_attention=True,
        position_buckets=8,
        pos_att_type=["p2c", "c2p"],
        share_att_key=True,
        norm_rel_ebd="layer_norm",
        position_biased_input=False,
        type_vocab_size=0,
    ),  # fmt: skip  (DeBERTa-v3 layout)
    "mpnet": _TEXT,
    "modernbert": dict(_TEXT, cls_token_id=2, sep_token_id=3, global_attn_every_n_layers=2, local_attention=4),
    "albert": dict(_TEXT, embedding_size=16),
    "vit": _VISION,
    "deit": _VISION,
    "beit": dict(_VISION, use_relative_position_bias=True),
    "dinov2": {k: v for k, v in _VISION.items() if k != "intermediate_size"} | {"mlp_ratio": 2},
    "swin": dict(
        image_size=IMAGE,
        patch_size=4,
        num_channels=3,
        embed_dim=16,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=2,
        num_labels=3,
    ),  # fmt: skip
}
TEXT_HEADS = {
    "sequence": AutoModelForSequenceClassification,
    "token": AutoModelForTokenClassification,
    "qa": AutoModelForQuestionAnswering,
    "mlm": AutoModelForMaskedLM,
}
HEADS = {"text": TEXT_HEADS, "vision": {"image": AutoModelForImageClassification}}
PIPELINE_TASKS = {
    "sequence": "text-classification",
    "token": "token-classification",
    "mlm": "fill-mask",
    "image": "image-classification",
}  # fmt: skip  (transformers 5 has no question-answering pipeline)
_MODALITY = {t: "vision" if "image_size" in c else "text" for t, c in CONFIGS.items()}
CASES = [(t, h) for t in CONFIGS for h in HEADS[_MODALITY[t]]]
IDS = [f"{t}-{h}" for t, h in CASES]
QUANT_METHODS = ("int8_dynamic", "int8_static", "int8_weight_only", "int4_weight_only")


VARIANTS = {  # layouts the matrix configs do not cover
    "deberta-v2-separate-position-projections": ("deberta-v2", dict(share_att_key=False)),
    "deberta-v2-conv-layer": ("deberta-v2", dict(conv_kernel_size=3)),
    "electra-embedding-size-equals-hidden": ("electra", dict(embedding_size=32)),
}


@functools.cache
def _teacher(model_type: str, head: str, num_layers: int | None = None):
    model_type, extra = VARIANTS.get(model_type, (model_type, {}))
    values = dict(CONFIGS[model_type], **extra)
    if num_layers is not None:
        values["num_hidden_layers"] = num_layers
    if head == "qa":
        values["num_labels"] = 2  # start / end
    config = AutoConfig.for_model(model_type, **values)
    config.architectures = config.architectures or []  # DeiT's Auto mapping has two classes and reads this list
    torch.manual_seed(0)
    return HEADS[_MODALITY[model_type]][head].from_config(config).eval()


def teacher(model_type: str, head: str, num_layers: int | None = None):
    return copy.deepcopy(_teacher(model_type, head, num_layers))


def rows(head: str, n: int = 8, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    if head == "image":
        pixels = torch.randn(n, 3, IMAGE, IMAGE, generator=g)
        return [{"pixel_values": pixels[i], "labels": torch.tensor(i % 3)} for i in range(n)]
    out = []
    for i in range(n):
        ids = torch.randint(5, VOCAB, (SEQ,), generator=g)
        mask = torch.ones(SEQ, dtype=torch.long)
        mask[SEQ - (i % 3) :] = 0
        ids = ids * mask
        row = {"input_ids": ids, "attention_mask": mask}
        if head == "sequence":
            row["labels"] = torch.tensor(i % 3)
        elif head == "token":
            row["labels"] = torch.where(mask.bool(), torch.randint(0, 3, (SEQ,), generator=g), -100)
        elif head == "qa":
            row["start_positions"], row["end_positions"] = torch.tensor(1), torch.tensor(3)
        else:
            row["labels"] = torch.where(torch.arange(SEQ) % 4 == 1, ids, -100)
        out.append(row)
    return out


def inputs(head: str, n: int = 4) -> dict[str, torch.Tensor]:
    keep = ("pixel_values",) if head == "image" else ("input_ids", "attention_mask")
    return {k: torch.stack([r[k] for r in rows(head, n, seed=1)]) for k in keep}


def main_output(model, batch) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    if getattr(out, "start_logits", None) is not None:
        return torch.cat([out.start_logits, out.end_logits], -1)
    return out.logits


def _args(cls, out, **kw):
    base = dict(output_dir=out, max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3, save_strategy="no",
                report_to=[], seed=0, use_cpu=True, dataloader_pin_memory=False, logging_steps=1)  # fmt: skip
    base.update(kw)
    return cls(**base)


def refusal(reason: str) -> str:
    return re.escape(reason[:60])


# ---- distillation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model_type", "head"), CASES, ids=IDS)
def test_distill(model_type, head, tmp_path):
    t = teacher(model_type, head)
    family = family_of(t)
    if family.student:
        with pytest.raises(NotImplementedError, match=refusal(family.student)):
            make_student(t, [1])
        student = teacher(model_type, head, num_layers=1) if model_type != "swin" else teacher(model_type, head)
        student = copy.deepcopy(student).train()
    else:
        student = make_student(t, [1]).train()
    weights = {"kd_weight": 1.0, "hidden_weight": 1.0, "attention_weight": 1.0, "embedding_weight": 1.0}
    refused = {"hidden_weight": family.hidden_kd, "embedding_weight": family.hidden_kd,
               "attention_weight": family.attention_kd}  # fmt: skip
    for name, reason in refused.items():
        if reason is not None:
            with pytest.raises(NotImplementedError, match=refusal(reason)):
                DistillationTrainer(
                    model=student, teacher_model=t, args=_args(DistillationConfig, str(tmp_path), **{name: 1.0})
                )
            weights[name] = 0.0
    before = attention.call_count()
    trainer = DistillationTrainer(
        model=student, teacher_model=t, args=_args(DistillationConfig, str(tmp_path), **weights),
        train_dataset=rows(head),
    )  # fmt: skip
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert "kd_loss" in logged
    assert ("attention_loss" in logged) == (weights["attention_weight"] > 0)
    assert ("hidden_loss" in logged) == (weights["hidden_weight"] > 0)
    if weights["attention_weight"] > 0:
        assert attention.call_count() - before >= 2 * (1 + 2)  # 2 steps x (student 1 + teacher 2 layers)


def test_other_heads_are_refused(tmp_path):
    """(DeiT's two-head ...WithTeacher student is supported: tests/test_deit.py.)"""
    from transformers import BertForMultipleChoice

    model = BertForMultipleChoice(AutoConfig.for_model("bert", **CONFIGS["bert"]))
    with pytest.raises(ValueError, match="BertForMultipleChoice is not a supported head"):
        DistillationTrainer(model=model, teacher_model=model, args=_args(DistillationConfig, str(tmp_path)))


def test_a_family_outside_the_table_still_distils_on_logits_and_refuses_pruning(tmp_path):
    """Prediction / hidden KD need only generic outputs; pruning and make_student need the table."""
    values = dict(_TEXT, max_position_embeddings=SEQ + 8)
    t = AutoModelForSequenceClassification.from_config(AutoConfig.for_model("data2vec-text", **values)).eval()
    student = AutoModelForSequenceClassification.from_config(AutoConfig.for_model("data2vec-text", **values))
    args = _args(DistillationConfig, str(tmp_path), hidden_weight=1.0, layer_map="uniform")
    assert DistillationTrainer(model=student, teacher_model=t, args=args, train_dataset=rows("sequence")).train()
    with pytest.raises(NotImplementedError, match="does not know the layout of model type 'data2vec-text'"):
        make_student(t, [0])


def test_attention_kd_fails_loudly_when_the_kd_attention_is_bypassed(tmp_path, monkeypatch):
    """A model that ignores the switch to our attention returns eager maps after dropout: caught at step 1."""
    t = teacher("bert", "sequence")
    student = make_student(t, [1]).train()
    monkeypatch.setattr(attention, "call_count", lambda: 0)
    trainer = DistillationTrainer(model=student, teacher_model=t, train_dataset=rows("sequence"),
                                  args=_args(DistillationConfig, str(tmp_path), attention_weight=1.0))  # fmt: skip
    with pytest.raises(RuntimeError, match="ignores its attention implementation"):
        trainer.train()


# ---- HomoDistil ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model_type", "head"), CASES, ids=IDS)
def test_homodistil(model_type, head, tmp_path):
    t = teacher(model_type, head)
    family = family_of(t)
    targets = dict(target_hidden_size=24, target_num_heads=3, target_intermediate_size=48)
    args = _args(HomoDistilConfig, str(tmp_path), max_steps=3, prune_start_step=0, prune_end_step=2, prune_every=1,
                 hidden_weight=1.0, **targets)  # fmt: skip
    if family.prune:
        with pytest.raises(NotImplementedError, match=refusal(family.prune)):
            HomoDistilTrainer(teacher_model=t, args=args)
        return
    if family.head_prune:
        with pytest.raises(NotImplementedError, match=refusal(family.head_prune)):
            HomoDistilTrainer(teacher_model=t, args=args)
        args.target_num_heads = args.target_hidden_size = None  # hidden = heads x head_dim: FFN only
    _prune_slice_reload(t, head, args, tmp_path)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_homodistil_layout_variants(variant, tmp_path):
    t = teacher(variant, "sequence")
    targets = dict(target_hidden_size=24, target_num_heads=3, target_intermediate_size=48)
    args = _args(HomoDistilConfig, str(tmp_path), max_steps=3, prune_start_step=0, prune_end_step=2, prune_every=1,
                 hidden_weight=1.0, **targets)  # fmt: skip
    _prune_slice_reload(t, "sequence", args, tmp_path)


def _prune_slice_reload(t, head, args, tmp_path):
    """Train a few pruning steps; the saved sliced model reloads with its stock class and computes what the
    masked model computed."""
    family = family_of(t)
    trainer = HomoDistilTrainer(teacher_model=t, args=args, train_dataset=rows(head))
    trainer.train()
    assert trainer.pruner.finished
    batch = inputs(head)
    masked = main_output(trainer.model.eval(), batch)
    trainer.save_model(str(tmp_path / "sliced"))
    reloaded = type(t).from_pretrained(tmp_path / "sliced").eval()
    config = reloaded.config
    assert getattr(config, family.hidden_field) == (24 if args.target_hidden_size else 32)
    assert getattr(config, family.heads_field) == (3 if args.target_num_heads else 4)
    torch.testing.assert_close(main_output(reloaded, batch), masked, rtol=1e-4, atol=1e-4)


def test_beit_with_a_shared_position_bias_refuses_head_pruning(tmp_path):
    config = AutoConfig.for_model("beit", **CONFIGS["beit"], use_shared_relative_position_bias=True)
    model = AutoModelForImageClassification.from_config(config)
    args = _args(HomoDistilConfig, str(tmp_path), prune_end_step=1, target_hidden_size=24, target_num_heads=3)
    with pytest.raises(NotImplementedError, match="shared_position_bias holds one bias per head shared by all layers"):
        HomoDistilTrainer(teacher_model=model, args=args)


def test_dinov2_ffn_target_must_fit_an_integer_mlp_ratio(tmp_path):
    args = _args(HomoDistilConfig, str(tmp_path), prune_end_step=1, target_hidden_size=24, target_num_heads=3,
                 target_intermediate_size=40)  # fmt: skip
    with pytest.raises(ValueError, match="do not fit hidden size 24. Choose target_intermediate_size = 24 x an int"):
        HomoDistilTrainer(teacher_model=teacher("dinov2", "image"), args=args)


# ---- quantization --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model_type", "head"), CASES, ids=IDS)
@pytest.mark.parametrize("method", QUANT_METHODS)
def test_quantize(model_type, head, method, tmp_path):
    t = teacher(model_type, head)
    batch = inputs(head)
    reference = main_output(t, batch)
    calibration = [inputs(head)] if method == "int8_static" else None
    group = 16 if method == "int4_weight_only" else 64
    q = quantize(t, QuantizationConfig(method=method, group_size=group), calibration)
    output = main_output(q, batch)
    error = 1 - torch.nn.functional.cosine_similarity(output.flatten(1), reference.flatten(1)).mean()
    assert error < (0.2 if method == "int4_weight_only" else 0.05)  # tiny random weights: int4 is coarse
    q.save_pretrained(tmp_path)
    reloaded = type(t).from_pretrained(tmp_path).eval()
    assert reloaded.is_quantized
    torch.testing.assert_close(main_output(reloaded, batch), output, rtol=0, atol=0)


@pytest.mark.parametrize("model_type", ["bert", "deberta-v2", "distilbert"])
def test_question_answering_calibration(model_type):
    """SmoothQuant, the error budget and the sensitivity report run the model on calibration data: QA models return
    start/end logits and no last_hidden_state."""
    calibration = [inputs("qa")]
    report = sensitivity_report(teacher(model_type, "qa"), QuantizationConfig(method="int8_static"), calibration)
    assert report and all(error > -1e-5 for _, error in report)
    config = QuantizationConfig(method="int8_static", smoothquant_alpha=0.5, error_budget=1e-3)
    q = quantize(teacher(model_type, "qa"), config, calibration)
    assert torch.isfinite(main_output(q, inputs("qa"))).all()


def test_deberta_keeps_relative_position_embeddings_in_float():
    q = quantize(teacher("deberta-v2", "sequence"), QuantizationConfig())
    assert type(q.deberta.encoder.rel_embeddings) is torch.nn.Embedding
    assert torch.isfinite(main_output(q, inputs("sequence"))).all()


# ---- make_student, plain reload, pipeline() ------------------------------------------------------------------


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {
        w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, VOCAB)])
    }
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=SEQ)  # fmt: skip


@pytest.mark.parametrize(("model_type", "head"), [c for c in CASES if c[1] in PIPELINE_TASKS], ids=lambda c: str(c))
def test_pipeline(model_type, head):
    from PIL import Image
    from transformers import ViTImageProcessor, pipeline

    for model in (teacher(model_type, head), quantize(teacher(model_type, head), QuantizationConfig())):
        if head == "image":
            processor = ViTImageProcessor(size={"height": IMAGE, "width": IMAGE}, image_mean=[0.5] * 3,
                                          image_std=[0.5] * 3)  # fmt: skip
            run = pipeline("image-classification", model=model, image_processor=processor)
            result = run(Image.new("RGB", (IMAGE, IMAGE), (120, 30, 200)))
        else:
            run = pipeline(PIPELINE_TASKS[head], model=model, tokenizer=_tokenizer())
            result = run("w5 [MASK] w7" if head == "mlm" else "w5 w6 w7")
        assert result


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """One student (make_student, or the teacher where the family refuses it) and one int8 model per case."""
    root = tmp_path_factory.mktemp("families")
    saved = []
    for model_type, head in CASES:
        t = teacher(model_type, head)
        layers = [1]
        student = (t if family_of(t).student else make_student(t, layers)).eval()
        folder = root / f"{model_type}-{head}"
        student.save_pretrained(folder / "float")
        quantize(teacher(model_type, head), QuantizationConfig()).save_pretrained(folder / "int8")
        batch = inputs(head)
        torch.save({"batch": batch, "output": main_output(student, batch)}, folder / "expected.pt")
        saved.append(str(folder))
    return saved


def test_make_student_slices_per_layer_config_fields():
    student = make_student(teacher("modernbert", "sequence"), [1])
    assert student.config.layer_types == ["sliding_attention"]
    assert not hasattr(student.model.layers[0].attn_norm, "weight")  # layer 0 never has one
    t = teacher("beit", "image")
    t.config.out_indices = [0, 1]
    student = make_student(t, [0])
    assert student.config.out_features == ["stem", "stage1"]
    for model_type in ("beit", "dinov2"):
        student = make_student(teacher(model_type, "image"), [0])
        assert student.config.stage_names == ["stem", "stage1"]
        assert student.config.out_features == ["stage1"]  # the teacher's (stage2 = layer 1) was dropped: default


def test_reload_without_the_plugin_in_a_fresh_process(saved_models):
    """Float students load with plain transformers and compute what was saved; int8 checkpoints refuse loudly."""
    code = r"""
import json, sys, torch
from transformers import AutoConfig
import transformers
report = {}
for folder in sys.argv[1:]:
    cls = getattr(transformers, AutoConfig.from_pretrained(folder + "/float").architectures[0])
    model = cls.from_pretrained(folder + "/float").eval()
    expected = torch.load(folder + "/expected.pt")
    with torch.no_grad():
        out = model(**expected["batch"])
    main = torch.cat([out.start_logits, out.end_logits], -1) if hasattr(out, "start_logits") else out.logits
    entry = {"float_equal": bool(torch.allclose(main, expected["output"], atol=1e-5))}
    try:
        cls.from_pretrained(folder + "/int8")
        entry["int8"] = "LOADED WITHOUT ERROR"
    except Exception as err:
        entry["int8"] = str(err)
    report[folder] = entry
print(json.dumps(report))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "warning", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code, *saved_models], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report) == len(CASES)
    for folder, entry in report.items():
        assert entry["float_equal"], folder
        assert entry["int8"] != "LOADED WITHOUT ERROR", folder
    assert (result.stdout + result.stderr).count(MARKER) >= len(CASES)  # each load report says what to do


def test_every_model_type_in_the_table_is_in_the_matrix():
    from hf_compress.models.families import supported_model_types

    missing = set(supported_model_types()) - set(CONFIGS)
    assert not missing, f"add a tiny config for {sorted(missing)} to CONFIGS: the README claims what this matrix runs"


def test_readme_table_is_generated_from_the_family_table():
    readme = os.path.join(os.path.dirname(__file__), "..", "README.md")
    with open(readme) as handle:
        text = handle.read()
    assert support.update(text) == text, (
        "README is stale: run `python -m hf_compress.models.support --write README.md`"
    )
    for model_type in CONFIGS:
        assert f"`{model_type}`" in support.support_table()
