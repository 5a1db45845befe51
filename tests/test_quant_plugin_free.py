"""A quantized checkpoint never loads without hf_compress, whatever the flags, and loads exactly with it.

The plugin-free loads run in one fresh interpreter that never imports hf_compress (this process has registered the
quantizer, so it cannot show what a user without the plugin gets).
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import VOCAB, bert_config
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, BertTokenizerFast

from hf_compress import QuantizationConfig, quantize
from hf_compress.quant.serialization import GUARD_FIELD, PLUGIN_REQUIRED

CASES = {
    "int8_dynamic": QuantizationConfig(method="int8_dynamic", quantize_embeddings=False),
    "int8_weight_only": QuantizationConfig(method="int8_weight_only", quantize_embeddings=False),
    "int4_weight_only": QuantizationConfig(method="int4_weight_only", group_size=16, quantize_embeddings=False),
    "int8_embedding": QuantizationConfig(method="int8_dynamic", quantize_embeddings=True),
}
# The calls a user without the plugin may make; each one must raise an error that says how to load the checkpoint.
LOADERS = {
    "auto, ignore_mismatched_sizes": "A.from_pretrained(d, ignore_mismatched_sizes=True)",
    "concrete class, ignore_mismatched_sizes": "B.from_pretrained(d, ignore_mismatched_sizes=True)",
    "auto, every loading flag": (
        "A.from_pretrained(d, ignore_mismatched_sizes=True, low_cpu_mem_usage=True, dtype=torch.bfloat16, "
        "device_map='cpu', use_safetensors=True)"
    ),
    "concrete class, config from the folder": (
        "B.from_pretrained(d, config=AutoConfig.from_pretrained(d), ignore_mismatched_sizes=True)"
    ),
    "pipeline": "pipeline('text-classification', model=d, model_kwargs={'ignore_mismatched_sizes': True})",
}
PLUGIN_FREE = """
import json, sys, torch
from transformers import AutoConfig, AutoModelForSequenceClassification as A, BertForSequenceClassification as B
from transformers import pipeline
results = {}
for d in sys.argv[2:]:
    for name, call in json.loads(sys.argv[1]).items():
        try:
            eval(call)
            results[f"{d}|{name}"] = "LOADED WITHOUT ERROR"
        except Exception as err:
            results[f"{d}|{name}"] = f"{type(err).__name__}: {err}"
assert "hf_compress" not in sys.modules
print("RESULTS " + json.dumps(results))
"""
INPUTS = {"input_ids": torch.randint(1, VOCAB, (3, 10), generator=torch.Generator().manual_seed(5))}


def _tokenizer() -> BertTokenizerFast:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCAB - 5)]
    return BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """case -> (folder, logits of the in-memory quantized model), plus a checkpoint re-saved after a reload."""
    root = tmp_path_factory.mktemp("quantized")
    saved = {}
    for case, config in CASES.items():
        torch.manual_seed(0)
        model = quantize(BertForSequenceClassification(bert_config(num_labels=4)).eval(), config)
        model.save_pretrained(root / case)
        _tokenizer().save_pretrained(root / case)
        with torch.no_grad():
            saved[case] = (root / case, model(**INPUTS).logits)
    folder, logits = saved["int8_dynamic"]
    AutoModelForSequenceClassification.from_pretrained(folder).save_pretrained(root / "resaved")
    _tokenizer().save_pretrained(root / "resaved")
    saved["resaved after a reload"] = (root / "resaved", logits)
    return saved


@pytest.fixture(scope="module")
def plugin_free_results(checkpoints):
    folders = [str(folder) for folder, _ in checkpoints.values()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    result = subprocess.run(
        [sys.executable, "-c", PLUGIN_FREE, json.dumps(LOADERS), *folders],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULTS "))
    return json.loads(line.removeprefix("RESULTS "))


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("case", [*CASES, "resaved after a reload"])
def test_loading_without_hf_compress_fails_and_says_how_to_load(checkpoints, plugin_free_results, case, loader):
    outcome = plugin_free_results[f"{checkpoints[case][0]}|{loader}"]
    assert outcome.startswith("ValueError: "), outcome[:2000]
    assert "`pip install hf-compress`, then `import hf_compress` before from_pretrained" in outcome, outcome[:2000]


@pytest.mark.parametrize("case", [*CASES, "resaved after a reload"])
@pytest.mark.parametrize("loader", [AutoModelForSequenceClassification, BertForSequenceClassification])
def test_with_hf_compress_every_checkpoint_reloads_exactly(checkpoints, case, loader):
    folder, logits = checkpoints[case]
    assert json.loads((folder / "config.json").read_text())[GUARD_FIELD] == PLUGIN_REQUIRED
    for kwargs in ({}, {"ignore_mismatched_sizes": True}):
        reloaded = loader.from_pretrained(folder, **kwargs)
        assert reloaded.is_quantized
        assert reloaded.config._experts_implementation != PLUGIN_REQUIRED  # the guard is lifted for the model only
        with torch.no_grad():
            torch.testing.assert_close(reloaded(**INPUTS).logits, logits, rtol=0, atol=0)


def test_an_experts_implementation_asked_for_is_kept(checkpoints):
    folder, logits = checkpoints["int8_weight_only"]
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder, experts_implementation="eager")
    assert reloaded.config._experts_implementation == "eager"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**INPUTS).logits, logits, rtol=0, atol=0)


def test_building_a_float_model_from_a_quantized_config_is_refused(checkpoints):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoints["int8_dynamic"][0])
    with pytest.raises(ValueError, match="loads only through from_pretrained with hf_compress imported") as err:
        AutoModelForSequenceClassification.from_config(config)
    assert "use from_pretrained, not from_config" in str(err.value)  # hf_compress is imported here


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_truncated_or_corrupt_weights_file_says_what_happened(tmp_path, damage):
    torch.manual_seed(0)
    quantize(BertForSequenceClassification(bert_config()).eval(), QuantizationConfig()).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"garbage")
    with pytest.raises(OSError, match=r"model.safetensors is not a readable safetensors file .* truncated or corrupt"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)
