"""Transfer-set augmentation (Tang et al. 2019): seeded, reproducible, originals kept with their labels."""

import pytest
import torch
from transformers import AutoTokenizer

from hf_compress.data import AugmentationConfig, augment_dataset, demo_model_path, make_augmenter

TEXTS = ["a gorgeous , witty and moving film", "dull , predictable and far too long", "the cast is superb", "meh"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(demo_model_path())


@pytest.fixture(scope="module")
def table(tokenizer):
    return torch.randn(tokenizer.vocab_size, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def data(tokenizer):
    from datasets import Dataset

    encoded = tokenizer(TEXTS)
    return Dataset.from_dict({**encoded, "labels": [1, 0, 1, 0]})


def run(data, tokenizer, table, **kw):
    config = AugmentationConfig(**{"copies": 3, "mask_prob": 0.3, "replace_prob": 0.3, "ngram_prob": 0.5, **kw})
    return augment_dataset(data, config, tokenizer, table, batch_size=2)


def test_originals_are_kept_with_their_labels(data, tokenizer, table):
    out = run(data, tokenizer, table)
    assert len(out) == 4 * len(data) and set(out.column_names) == {*data.column_names, "is_augmented"}
    originals = out.filter(lambda row: not row["is_augmented"])
    assert originals["input_ids"] == data["input_ids"] and originals["labels"] == data["labels"]
    augmented = out.filter(lambda row: row["is_augmented"])
    assert set(augmented["labels"]) == {-100}
    for row in augmented:
        ids = row["input_ids"]
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id  # special tokens untouched
        assert len(row["attention_mask"]) == len(ids) == len(row["token_type_ids"])
    changed = [a != o for a, o in zip(augmented["input_ids"], [ids for ids in data["input_ids"] for _ in range(3)])]
    assert sum(changed) >= len(changed) // 2
    assert any(tokenizer.mask_token_id in ids for ids in augmented["input_ids"])


def test_seeded_and_independent_of_the_batch_size(data, tokenizer, table):
    first = run(data, tokenizer, table)
    config = AugmentationConfig(copies=3, mask_prob=0.3, replace_prob=0.3, ngram_prob=0.5)
    again = augment_dataset(data, config, tokenizer, table, batch_size=3)
    assert first["input_ids"] == again["input_ids"]
    other = run(data, tokenizer, table, seed=1)
    assert other["input_ids"] != first["input_ids"]


def test_replacement_uses_nearest_neighbours(tokenizer):
    """With a table where token x's only close neighbour is y, replacing every token turns x into y."""
    vocab = tokenizer.vocab_size
    table = torch.randn(vocab, 16, generator=torch.Generator().manual_seed(0))
    film, movie = tokenizer.convert_tokens_to_ids(["film", "movie"])
    table[movie] = table[film] + 1e-3
    fn = make_augmenter(AugmentationConfig(copies=1, mask_prob=0.0, replace_prob=1.0, ngram_prob=0.0, neighbours=1),
                        tokenizer, table)  # fmt: skip
    batch = {"input_ids": [tokenizer("film")["input_ids"]], "labels": [1]}
    out = fn(batch, [0])
    assert out["input_ids"][1] == [tokenizer.cls_token_id, movie, tokenizer.sep_token_id]
    assert out["is_augmented"] == [False, True] and out["labels"] == [1, -100]


def test_ngram_sampling_keeps_a_contiguous_window(tokenizer, table):
    fn = make_augmenter(AugmentationConfig(copies=5, mask_prob=0.0, replace_prob=0.0, ngram_prob=1.0, ngram_max=2),
                        tokenizer, table)  # fmt: skip
    ids = tokenizer(TEXTS[0])["input_ids"]
    out = fn({"input_ids": [ids]}, [0])
    body = ids[1:-1]
    for row in out["input_ids"][1:]:
        window = row[1:-1]
        assert 1 <= len(window) <= 2
        assert any(body[i : i + len(window)] == window for i in range(len(body)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(copies=-1), r"copies must be an int >= 0"),
        (dict(mask_prob=1.5), r"mask_prob must be a probability in \[0, 1\]"),
        (dict(mask_prob=0.6, replace_prob=0.6), r"mask_prob \+ replace_prob must be <= 1"),
        (dict(ngram_min=3, ngram_max=2), r"need 1 <= ngram_min <= ngram_max"),
        (dict(neighbours=0), r"neighbours must be >= 1"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        AugmentationConfig(**overrides)


def test_refuses_untokenized_or_augmented_data(data, tokenizer, table):
    fn = make_augmenter(AugmentationConfig(), tokenizer, table)
    with pytest.raises(ValueError, match="needs tokenized rows with input_ids"):
        fn({"text": ["hello"]}, [0])
    once = run(data, tokenizer, table)
    with pytest.raises(ValueError, match="already has a 'is_augmented' column"):
        augment_dataset(once, AugmentationConfig(), tokenizer, table)
