"""A sentence-transformers teacher's student keeps the pipeline: distilled or pruned while distilled from a
SentenceTransformer folder (Transformer + mean Pooling + Normalize), the saved student loads in
``SentenceTransformer(dir)`` with the same modules, its own embedding width, the teacher's max_seq_length and unit
norms. The real-lane test does it for the packaged all-MiniLM-L6-v2."""

import json

import pytest
import torch
from conftest import PRUNE_TARGETS, TRAIN_DEFAULTS, bert_config, text_dataset
from tiny_assets import WORDS
from transformers import AutoTokenizer, BertModel, BertTokenizerFast

from hf_compress import DistillationConfig, DistillationTrainer, HomoDistilConfig, HomoDistilTrainer, make_student
from hf_compress.models.sentence import read_sentence_modules, write_sentence_modules

st = pytest.importorskip("sentence_transformers")
try:  # sentence-transformers 6 moved its modules; 5 and older keep them in sentence_transformers.models
    from sentence_transformers.sentence_transformer import modules as st_modules
except ImportError:
    from sentence_transformers import models as st_modules


@pytest.fixture
def st_teacher(tmp_path):
    """A tiny BERT saved as a SentenceTransformer: [Transformer(max_seq_length 16), mean Pooling, Normalize]."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}).save_pretrained(tmp_path / "bert")
    torch.manual_seed(0)
    BertModel(bert_config()).save_pretrained(tmp_path / "bert")
    encoder = st_modules.Transformer(str(tmp_path / "bert"), max_seq_length=16)
    pooling = st_modules.Pooling(encoder.get_word_embedding_dimension(), pooling_mode="mean")
    st.SentenceTransformer(modules=[encoder, pooling, st_modules.Normalize()], device="cpu").save(str(tmp_path / "st"))
    return tmp_path / "st"


def _check_pipeline(folder, width):
    loaded = st.SentenceTransformer(str(folder), device="cpu")
    kinds = [type(m).__name__ for m in loaded]
    assert kinds == ["Transformer", "Pooling", "Normalize"], kinds
    assert loaded.get_sentence_embedding_dimension() == width and loaded.max_seq_length == 16
    embeddings = loaded.encode(["w1 w2 w3", "w4 w5"], convert_to_tensor=True)
    assert embeddings.shape == (2, width)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(2))


def test_a_distilled_student_of_a_sentence_transformer_loads_as_one(st_teacher, tmp_path):
    teacher = BertModel.from_pretrained(st_teacher)
    args = DistillationConfig(output_dir=str(tmp_path / "run"), **{**TRAIN_DEFAULTS, "max_steps": 2},
                              kd_weight=0.0, hidden_weight=1.0)  # fmt: skip
    data = text_dataset(16).remove_columns("labels")
    tokenizer = AutoTokenizer.from_pretrained(st_teacher)
    trainer = DistillationTrainer(model=make_student(teacher, [0, 3]), teacher_model=teacher, args=args,
                                  train_dataset=data, processing_class=tokenizer)  # fmt: skip
    trainer.train()
    trainer.save_model(str(tmp_path / "student"))
    _check_pipeline(tmp_path / "student", 32)


def test_a_student_pruned_to_half_width_reports_its_own_embedding_width(st_teacher, tmp_path):
    teacher = BertModel.from_pretrained(st_teacher)
    args = HomoDistilConfig(output_dir=str(tmp_path / "run"), **{**TRAIN_DEFAULTS, "max_steps": 4}, kd_weight=0.0,
                            hidden_weight=1.0, prune_start_step=0, prune_end_step=2, prune_every=1,
                            **PRUNE_TARGETS)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(st_teacher)
    data = text_dataset(16).remove_columns("labels")
    trainer = HomoDistilTrainer(teacher_model=teacher, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(tmp_path / "student"))
    _check_pipeline(tmp_path / "student", PRUNE_TARGETS["target_hidden_size"])
    pooling = json.loads((tmp_path / "student" / "1_Pooling" / "config.json").read_text())
    assert 16 in [pooling.get(k) for k in ("word_embedding_dimension", "embedding_dimension")]


def test_a_pipeline_with_a_projection_sized_for_the_teacher_is_refused(st_teacher, tmp_path):
    modules = read_sentence_modules(st_teacher)
    modules.modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    with pytest.raises(ValueError, match="sized for the teacher's width"):
        write_sentence_modules(modules, tmp_path, hidden_size=16)
    assert read_sentence_modules(tmp_path / "nowhere") is None


def test_pooled_embedding_loss_is_zero_for_the_teacher_and_width_free_for_a_narrower_student():
    from hf_compress.distill.losses import pooled, pooled_embedding_loss

    torch.manual_seed(0)
    hidden, mask = torch.randn(4, 6, 8), torch.ones(4, 6, dtype=torch.bool)
    mask[1, 3:] = False
    embedding = pooled(hidden, mask)
    torch.testing.assert_close(embedding[1], torch.nn.functional.normalize(hidden[1, :3].mean(0), dim=0))
    assert pooled_embedding_loss(embedding, embedding).abs() < 1e-6
    assert pooled_embedding_loss(pooled(hidden, mask, "cls"), embedding) > 0.01
    rotation, _ = torch.linalg.qr(torch.randn(8, 8))
    narrower = torch.randn(4, 6, 8) @ rotation[:, :5]  # another model: different similarities
    wider_same = hidden @ torch.cat([rotation, torch.zeros(8, 2)], 1)  # the teacher's states in 10 dimensions
    assert pooled_embedding_loss(pooled(wider_same, mask), embedding) < 1e-6  # same similarities: no loss
    assert pooled_embedding_loss(pooled(narrower, mask), embedding) > 0.01


def test_the_pooling_mode_is_read_from_the_teachers_pipeline(st_teacher, tmp_path):
    from hf_compress.data import demo_model_path
    from hf_compress.models.sentence import sentence_pooling_mode

    assert sentence_pooling_mode(read_sentence_modules(st_teacher)) == "mean"
    assert sentence_pooling_mode(None) == "mean"
    if read_sentence_modules(demo_model_path()) is not None:
        assert sentence_pooling_mode(read_sentence_modules(demo_model_path())) == "mean"
    modules = read_sentence_modules(st_teacher)
    config = modules.source / "1_Pooling" / "config.json"
    config.write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True}))
    assert sentence_pooling_mode(modules) == "cls"
    config.write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": "max"}))
    with pytest.raises(ValueError, match="set pooling='mean' or 'cls'"):
        sentence_pooling_mode(modules)


def test_distilling_the_sentence_embedding_logs_its_loss(st_teacher, tmp_path):
    teacher = BertModel.from_pretrained(st_teacher)
    args = HomoDistilConfig(output_dir=str(tmp_path / "run"), **{**TRAIN_DEFAULTS, "max_steps": 4}, kd_weight=0.0,
                            pooled_weight=1.0, prune_start_step=0, prune_end_step=2, prune_every=1,
                            **PRUNE_TARGETS)  # fmt: skip
    data = text_dataset(16).remove_columns("labels")
    trainer = HomoDistilTrainer(teacher_model=teacher, args=args, train_dataset=data)
    trainer.train()
    logged = [entry["pooled_loss"] for entry in trainer.state.log_history if "pooled_loss" in entry]
    assert logged and all(value >= 0 for value in logged) and any(value > 0 for value in logged)


def test_a_teacher_width_module_is_kept_and_a_mismatch_saves_a_plain_encoder_with_a_warning(st_teacher, tmp_path,
                                                                                             caplog):  # fmt: skip
    from hf_compress.models.sentence import save_like_teacher

    (st_teacher / "3_Dense").mkdir()
    (st_teacher / "3_Dense" / "config.json").write_text("{}")
    listed = json.loads((st_teacher / "modules.json").read_text())
    listed.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (st_teacher / "modules.json").write_text(json.dumps(listed))
    write_sentence_modules(read_sentence_modules(st_teacher), tmp_path / "same", hidden_size=32)
    assert (tmp_path / "same" / "3_Dense" / "config.json").is_file()  # the teacher's width: kept as it is
    teacher = BertModel.from_pretrained(st_teacher)
    narrow = BertModel(bert_config(hidden_size=16, num_attention_heads=2, intermediate_size=32))
    narrow.save_pretrained(tmp_path / "narrow")
    with caplog.at_level("WARNING"):
        assert not save_like_teacher(narrow, teacher, tmp_path / "narrow")
    assert "plain encoder" in caplog.text and not (tmp_path / "narrow" / "modules.json").exists()


def test_homodistil_checkpoints_hold_no_pipeline_and_a_one_row_similarity_batch_is_refused(st_teacher, tmp_path):
    from hf_compress.distill.losses import pooled_embedding_loss

    teacher = BertModel.from_pretrained(st_teacher)
    saving = {**TRAIN_DEFAULTS, "max_steps": 4, "save_strategy": "steps", "save_steps": 2}
    args = HomoDistilConfig(output_dir=str(tmp_path / "run"), **saving, kd_weight=0.0, hidden_weight=1.0,
                            prune_start_step=0, prune_end_step=2, prune_every=1, **PRUNE_TARGETS)  # fmt: skip
    trainer = HomoDistilTrainer(
        teacher_model=teacher, args=args, train_dataset=text_dataset(16).remove_columns("labels")
    )
    trainer.train()
    checkpoints = sorted((tmp_path / "run").glob("checkpoint-*"))
    assert checkpoints and not any((c / "modules.json").exists() for c in checkpoints)  # full-size masked weights
    with pytest.raises(ValueError, match="at least 2 rows"):
        pooled_embedding_loss(torch.ones(1, 4), torch.ones(1, 8))
