"""Sentence-transformers folders. A teacher saved as a SentenceTransformer (``modules.json``: Transformer, Pooling,
Normalize) is read as such, and an encoder compressed from it is saved with the same modules: the Pooling's
embedding dimension set to the student's width, Normalize and ``max_seq_length`` kept, so ``SentenceTransformer(dir)``
loads the student as the pipeline its teacher was (without them it rebuilds ``[Transformer, Pooling(mean)]``: no
normalisation, the model's 512 positions as its length). Writing needs only the standard library; reading the
result needs the sentence-transformers package."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)
MODULES_NAME = "modules.json"
# module kinds by class name: sentence-transformers writes them as sentence_transformers.models.Pooling (<= 5) or
# under sentence_transformers.sentence_transformer.modules (6)
TRANSFORMER, POOLING, NORMALIZE = "Transformer", "Pooling", "Normalize"
# files beside the modules that describe the pipeline and are copied as they are
PIPELINE_FILES = ("sentence_bert_config.json", "config_sentence_transformers.json")
# the Pooling config's embedding width: sentence-transformers <= 5 and 6 name it differently
DIMENSION_KEYS = ("word_embedding_dimension", "embedding_dimension")
HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering", "ForMultipleChoice")


@dataclass
class SentenceModules:
    """The modules of a sentence-transformers folder (``source``)."""

    source: Path
    modules: list[dict]

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.modules if kind_of(m) == kind]

    @property
    def normalize(self) -> bool:
        return bool(self.of_type(NORMALIZE))

    def pooling(self) -> dict:
        """The Pooling module's config (``pooling_mode_mean_tokens`` ...); {} without one."""
        found = self.of_type(POOLING)
        if not found:
            return {}
        return json.loads((self.source / found[0]["path"] / "config.json").read_text())


def kind_of(module: dict) -> str:
    """A module's class name (``Pooling``) from its ``type`` in modules.json."""
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def read_sentence_modules(path: str | Path | None) -> SentenceModules | None:
    """The modules of a local sentence-transformers folder, or None when ``path`` is not one."""
    if not path:
        return None
    folder = Path(path)
    file = folder / MODULES_NAME
    if not file.is_file():
        return None
    try:
        modules = json.loads(file.read_text())
    except ValueError as err:
        raise ValueError(f"{file} is not valid JSON ({err}); repair or remove it.") from err
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise ValueError(f"{file} is not a sentence-transformers module list; repair or remove it.")
    return SentenceModules(source=folder, modules=modules)


def sentence_pooling_mode(modules: SentenceModules | None) -> str:
    """'cls' when the pipeline pools the first token, else 'mean' (also without a pipeline). Pooling modes other than
    these two (max, weighted mean, last token) are a ValueError: the pooled-embedding loss computes mean and cls."""
    config = modules.pooling() if modules is not None else {}
    mode = config.get("pooling_mode")  # sentence-transformers 6
    if mode is None:  # <= 5: one flag per mode
        flags = [k.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
                 for k, v in config.items() if k.startswith("pooling_mode_") and v is True]  # fmt: skip
        mode = flags[0] if len(flags) == 1 else ("mean" if not flags else "+".join(flags))
    if mode not in ("mean", "cls"):
        raise ValueError(f"The teacher's sentence-transformers Pooling is {mode!r}; pooled_weight computes 'mean' or "
                         "'cls' pooling: set pooling='mean' or 'cls' explicitly, or pooled_weight=0.")  # fmt: skip
    return mode


def teacher_modules(teacher) -> SentenceModules | None:
    """The sentence-transformers modules of the local folder ``teacher`` was loaded from, if it is one."""
    source = getattr(getattr(teacher, "config", None), "_name_or_path", None)
    return read_sentence_modules(source) if source and Path(source).is_dir() else None


def teacher_pooling_mode(teacher) -> str:
    return sentence_pooling_mode(teacher_modules(teacher))


def is_bare_encoder(model) -> bool:
    """No task head: what a sentence-transformers Transformer module loads (an ...ForMaskedLM also counts: the
    module loads its encoder)."""
    return not any(name.endswith(HEADS) for name in getattr(model.config, "architectures", None) or [])


def write_sentence_modules(modules: SentenceModules, output_dir: str | Path, hidden_size: int) -> None:
    """Write ``modules`` into ``output_dir`` (which holds the compressed encoder) for an encoder ``hidden_size``
    wide. A module that would need resizing with the width and is not Pooling (a Dense projection) is a ValueError:
    its weights are sized for the teacher."""
    out = Path(output_dir)
    known = {TRANSFORMER, POOLING, NORMALIZE}
    other = [m for m in modules.modules if kind_of(m) not in known]
    pooling = modules.pooling()
    width = next((pooling[k] for k in DIMENSION_KEYS if k in pooling), None)
    if other and width == hidden_size:  # the teacher's width: its later modules fit the student as they are
        for module in other:
            shutil.copytree(modules.source / module["path"], out / module["path"], dirs_exist_ok=True)
    elif other:
        other = [m["type"] for m in other]
        raise ValueError(
            f"The teacher's sentence-transformers pipeline has {other} after its encoder; their weights are sized for "
            f"the teacher's width, which the student does not have. Keep the teacher's width, or save the student "
            "without them (it is saved as a plain encoder otherwise)."
        )
    for name in PIPELINE_FILES:
        if (modules.source / name).is_file():
            shutil.copyfile(modules.source / name, out / name)
    for module in modules.modules:
        folder = out / module.get("path", "")
        folder.mkdir(parents=True, exist_ok=True)
        if kind_of(module) == POOLING:
            config = modules.pooling()
            keys = [k for k in DIMENSION_KEYS if k in config] or [DIMENSION_KEYS[0]]
            config.update({key: hidden_size for key in keys})
            (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / MODULES_NAME).write_text(json.dumps(modules.modules, indent=2) + "\n")


def save_like_teacher(model, teacher, output_dir: str | Path) -> bool:
    """After ``model`` (a compressed encoder) was saved in ``output_dir``: write its teacher's sentence-transformers
    modules beside it when the teacher came from such a folder and ``model`` has no task head. Returns whether it
    did."""
    modules = teacher_modules(teacher)
    if modules is None or not is_bare_encoder(model):
        return False
    try:
        write_sentence_modules(modules, output_dir, model.config.hidden_size)
    except ValueError as err:  # never worth the weights being saved: a plain encoder, said plainly
        logger.warning(
            "%s is saved as a plain encoder, without the sentence-transformers pipeline: %s", output_dir, err
        )
        return False
    logger.info("saved %s with its teacher's sentence-transformers modules (%s)", output_dir,
                ", ".join(kind_of(m) for m in modules.modules))  # fmt: skip
    return True
