"""Checks on what a user hands the recipe runner, and the rules that keep its outputs safe to share.

- names become folder names: a strict charset, no path separators, no ``..``;
- nothing is written or removed outside the output folder (`inside`);
- secrets (``hub_token``, passwords, ...) are redacted before anything goes to disk or stdout, and what is
  written carries no absolute local paths (`public`);
- a metric that is not shipped runs code (``evaluate.load``), so it needs ``data.trust_remote_metric: true``;
- every bad value is caught at parse time where it can be, with the field and the fix in the message.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe (or CLI input, or its data) that cannot run; the message says where and what to do."""


# ---- names and paths --------------------------------------------------------------------------------------

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(where: str, kind: str, name: Any) -> str:
    """A stage / recipe name becomes part of a folder name: letters, digits, ``.``, ``_``, ``-``; no ``..``."""
    text = str(name)
    if not NAME_RE.match(text) or ".." in text:
        raise RecipeError(
            f"{where}: {kind} {text!r} is not a valid name; use 1-64 letters, digits, '.', '_' or '-' (starting "
            "with a letter or digit, no '/' or '..'), e.g. 'distill-6-layers'."
        )
    return text


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, after checking it lies strictly inside ``root`` (symlinks followed): the runner calls
    this before every rmtree / rename / write, so a bad name or a planted link cannot reach outside."""
    root_resolved, resolved = Path(root).resolve(), Path(path).resolve()
    if resolved == root_resolved or root_resolved not in resolved.parents:
        raise RecipeError(
            f"Refusing to write or remove {path}: it resolves to {resolved}, outside the output folder "
            f"{root_resolved}. Remove the link or choose another --output-dir."
        )
    return resolved


# the offline demo teacher and data sets a recipe may name instead of a path or a Hub id
DEMO_MODELS = ("demo-minilm",)
DEMO_DATA = ("demo-rotten-tomatoes", "demo-fashion-mnist")


# ---- secrets and local paths ------------------------------------------------------------------------------

SECRET_KEY = re.compile(
    r"(hub_token|hf_token|access_token|auth_token|api_token|^token$|password|passwd|secret|api[_-]?key|private_key|"
    r"credential)",
    re.I,
)
REDACTED = "<redacted>"
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
_PLACEHOLDERS = {"null", "none", "~", "false", "true", "''", '""', "...", "***", "xxx"}
# `key: value` / `key=value` on one line (markdown, .env, .cfg, .ini, unparsable JSON / YAML); the key is checked
# against SECRET_KEY, so `pad_token: [PAD]` is not a hit but `hub_token: ...` and `export API_KEY=...` are
_KEY_VALUE = re.compile(
    r"""(?<![\w.-])(?P<key>[A-Za-z_][\w.-]*)["']?\s*[:=]\s*(?P<value>"[^"]*"|'[^']*'|[^\s"',}#]+)"""
)
# tokenizer vocabularies hold ordinary words ("secret", "password") as tokens: only Hub tokens are looked for
TOKENIZER_VOCABS = ("vocab.txt", "merges.txt", "vocab.json", "added_tokens.json", "spiece.model",
                    "sentencepiece.bpe.model", "tokenizer.model", "sentencepiece.model")  # fmt: skip
# a credential written into a string value under an ordinary key: a command line (`--hub_token=abc`,
# `--hub_token abc`) or an environment assignment (`HF_TOKEN=abc`); no spaces around `=`, so template code
# (`{% set token = message %}`) is not a hit
_INLINE = re.compile(r"""(?:(?<![\w.])(?P<key>[A-Za-z_][\w.-]*)=(?P<value>[^\s"',;}]+)"""
                     r"""|--(?P<flag>[A-Za-z_][\w.-]*)\s+(?P<arg>[^\s"',;}-][^\s"',;}]*))""")  # fmt: skip
# a number this long under a credential key is a PIN or a numeric password, not a count or a token id
_SECRET_DIGITS = 6
_STRUCTURED = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


def redact(value: Any) -> Any:
    """A copy of ``value`` with every string under a secret-looking key replaced by ``<redacted>``."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(v, str) and v and SECRET_KEY.search(str(k)) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and bool(SECRET_KEY.search(key.rsplit(".", 1)[-1]))


def _is_placeholder(value: str) -> bool:
    """An empty value, ``null``, ``<redacted>`` / ``<hub_token>``, or a reference like ``$HF_TOKEN``: no secret."""
    text = value.strip().strip("\"'").strip()
    return not text or text.lower() in _PLACEHOLDERS or text.startswith(("<", "$", "%(")) or set(text) == {"*"}


def _hub_tokens(text: str, where: str) -> list[str]:
    return [f"a Hub token (hf_...){where}" for _ in _HF_TOKEN.finditer(text)]


def _walk(value: Any, path: str, skip: tuple[str, ...] = (), secret: bool = False, keys: bool = True) -> list[str]:
    """Secrets in parsed JSON / YAML: a real string or a long number (``password: 12345678``) at or under a
    secret-looking key, a credential written into any other string (``"--hub_token=abc"``), or a Hub token in
    any string. Short numbers (``secret: 3595``, a token id) are not secrets; under a ``skip`` path (a
    tokenizer's vocab and merges: ordinary words) keys are not looked at, only Hub tokens."""
    if isinstance(value, str):
        if secret and not _is_placeholder(value):
            return [f"key {path!r}"]
        inline = [] if not keys else [f"key {key!r} inside {path!r}" for key in _inline_keys(value)]
        return inline or _hub_tokens(value, f" under {path!r}" if path else "")
    if secret and isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) >= _SECRET_DIGITS:
        return [f"key {path!r}"]
    if isinstance(value, dict):
        items = [(f"{path}.{key}" if path else str(key), key, item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(f"{path}[{index}]", None, item) for index, item in enumerate(value)]
    else:
        return []
    found = []
    for where, key, item in items:
        inner_keys = keys and where not in skip
        found += _walk(item, where, skip, secret or (inner_keys and _is_secret_key(key)), inner_keys)
    return found


def _inline_keys(text: str) -> list[str]:
    """The secret-looking keys given a real value inside a string: ``--hub_token=abc``, ``--hub_token abc``,
    ``HF_TOKEN=abc``. Template code (a chat template's ``{% set token=message %}``) is code, not a setting."""
    found = []
    if "{%" in text or "{{" in text:
        return found
    for match in _INLINE.finditer(text):
        key, value = (match["key"], match["value"]) if match["key"] else (match["flag"], match["arg"])
        if _is_secret_key(key) and not _is_placeholder(value):
            found.append(key)
    return found


def _text_secrets(text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        keys = [f"key {m['key']!r} on line {number}" for m in _KEY_VALUE.finditer(line)
                if _is_secret_key(m["key"]) and not _is_placeholder(m["value"])]  # fmt: skip
        keys = keys or [f"key {key!r} on line {number}" for key in _inline_keys(line)]
        found += keys or _hub_tokens(line, f" on line {number}")  # a token under a key is named by its key
    return found


def find_secrets(text: str, name: str = "") -> list[str]:
    """What in ``text`` (the content of the file ``name``) looks like a credential, each named by where it is
    (a key, a line), never by its value.

    JSON / YAML are parsed and walked: a real string under a secret-looking key (``hub_token``, ``password``,
    ``api_key``, ...) or a Hub token (``hf_...``) in any string is a secret; numbers never are. Tokenizer
    vocabularies (``vocab.txt``, ``merges.txt``, ``vocab.json``, ``tokenizer.json``'s vocab / merges) hold words
    like "secret" as tokens, so they are only searched for Hub tokens. Anything else (markdown, text, ``.env``,
    ``.cfg``, ``.ini``, or a JSON / YAML file that does not parse) is scanned line by line for ``key: value`` and
    ``key=value``."""
    base = Path(name).name
    if base in TOKENIZER_VOCABS:
        return _hub_tokens(text, "")
    kind = _STRUCTURED.get(Path(base).suffix.lower())
    tokenizer = base == "tokenizer.json"
    try:
        if kind == "json":
            documents = [json.loads(text)]
        elif kind == "yaml":
            documents = list(yaml.safe_load_all(text))
        else:
            documents = None
    except (ValueError, yaml.YAMLError):
        documents = None
    if documents is None:
        return _hub_tokens(text, "") if tokenizer else _text_secrets(text)
    skip = ("model.vocab", "model.merges") if tokenizer else ()
    return [hit for document in documents for hit in _walk(document, "", skip)]


def _is_abs(text: str) -> bool:
    return text.startswith(("/", "~", "\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", text))


def public(value: Any, root: Path | None = None) -> Any:
    """A copy of ``value`` fit to publish: secrets redacted, every absolute local path made relative to
    ``root`` (the output folder) when inside it, else cut to its last component."""
    value = redact(value)
    if isinstance(value, dict):
        return {k: public(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [public(v, root) for v in value]
    if isinstance(value, str) and _is_abs(value):
        path = Path(value).expanduser()
        if root is not None:
            try:
                return str(path.resolve().relative_to(Path(root).resolve()))
            except ValueError:
                pass
        return path.name or value
    return value


# ---- metrics ----------------------------------------------------------------------------------------------


def check_metric(where: str, name: str, trust_remote_metric: bool) -> None:
    from .metrics import SHIPPED

    if name in SHIPPED or trust_remote_metric:
        return
    close = difflib.get_close_matches(name, SHIPPED, n=1)
    hint = f"Did you mean {close[0]!r}? " if close else ""
    raise RecipeError(
        f"{where}: metric {name!r} is not shipped (shipped: {list(SHIPPED)}). {hint}Any other metric is loaded "
        "with evaluate.load, which runs its code: set data.trust_remote_metric: true to allow that."
    )


# ---- recipe sections --------------------------------------------------------------------------------------

LOCAL_HINTS = ("/", "./", "../", "~", "\\")


def looks_local(source: str) -> bool:
    """A path rather than a Hub id (``org/name`` or ``name``)."""
    return source.startswith(LOCAL_HINTS) or source.count("/") > 1 or bool(re.match(r"^[A-Za-z]:[\\/]", source))


def check_teacher(where: str, teacher, task: str) -> None:

    if teacher.num_labels is not None and teacher.num_labels < 1:
        raise RecipeError(f"{where} teacher: num_labels must be >= 1 (1 = regression), got {teacher.num_labels}.")
    if teacher.label_order not in ("names", "index"):
        raise RecipeError(
            f"{where} teacher: label_order must be 'names' (match the data's label names to the head's) or 'index', "
            f"got {teacher.label_order!r}."
        )
    source = teacher.source
    if teacher.config and source != "config":
        raise RecipeError(
            f"{where} teacher: config is only read with source: config (source is {source!r}); set source: config "
            "or remove config."
        )
    if source == "config":
        _check_teacher_config(where, teacher.config, task)
        return
    if source in DEMO_MODELS:
        if task != "text-classification":
            raise RecipeError(
                f"{where}: teacher.source {source!r} is a text model but data.task is {task!r}; use data.task: "
                "text-classification or a vision teacher."
            )
        return
    if looks_local(source) and not Path(source).expanduser().is_dir():
        raise RecipeError(
            f"{where}: teacher.source {source!r} is not an existing directory; fix the path (a Hub id is "
            "written org/name)."
        )


def _check_teacher_config(where: str, config: dict | None, task: str) -> None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if not config or "model_type" not in config:
        raise RecipeError(
            f"{where}: teacher.source 'config' needs teacher.config with a model_type, e.g. "
            "{model_type: vit, hidden_size: 128, num_attention_heads: 4, ...}."
        )
    model_type = config["model_type"]
    if model_type not in CONFIG_MAPPING:
        close = difflib.get_close_matches(str(model_type), list(CONFIG_MAPPING), n=3)
        raise RecipeError(f"{where}: teacher.config.model_type {model_type!r} is unknown; close ones: {close}.")
    values = {k: v for k, v in config.items() if k != "model_type"}
    built = checked_config(f"{where}: teacher.config", model_type, values)
    check_task_matches(built, task, f"{where}: teacher.config ({model_type})")


def checked_config(what: str, model_type: str, values: dict, **extra):
    """``AutoConfig.for_model(model_type, **values, **extra)``, or a RecipeError naming ``what`` for a key the config
    does not have (with the closest spelling), a value its class rejects, or a width the head count does not
    divide. ``extra`` (labels) is not checked as a key."""
    from transformers import AutoConfig

    known = config_keys(model_type)
    unknown = sorted(set(values) - known)
    if unknown:
        hints = {k: difflib.get_close_matches(k, sorted(known), n=1) for k in unknown}
        said = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise RecipeError(
            f"{what} has key(s) that a {model_type} config does not have: {said}. A config ignores unknown keys "
            "and would build a default-size model; fix the spelling or remove them."
        )
    try:
        built = AutoConfig.for_model(model_type, **values, **extra)
    except Exception as err:  # a config class rejecting a value: say which
        raise RecipeError(f"{what} is not a valid {model_type} config ({err}).") from err
    hidden, heads = getattr(built, "hidden_size", None), getattr(built, "num_attention_heads", None)
    if isinstance(hidden, int) and isinstance(heads, int) and (heads < 1 or hidden % heads):
        raise RecipeError(
            f"{what} hidden_size={hidden} is not a multiple of num_attention_heads={heads}; choose a head count "
            "that divides the width."
        )
    return built


# Accepted by every config's __init__ although they are neither fields nor in to_dict().
_COMMON_CONFIG_KEYS = {"num_labels", "attn_implementation", "torch_dtype", "name_or_path"}


def config_keys(model_type: str) -> set[str]:
    """Every key a ``model_type`` config understands: its dataclass fields, what its default ``to_dict()`` holds
    and the few keyword arguments all configs take."""
    import dataclasses
    import inspect

    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type)
    keys = set(default.to_dict()) | set(inspect.signature(type(default).__init__).parameters) | _COMMON_CONFIG_KEYS
    if dataclasses.is_dataclass(default):
        keys |= {f.name for f in dataclasses.fields(default)}
    return keys - {"self", "kwargs", "args"}


def check_task_matches(config, task: str, teacher: str, detail: str = "") -> None:
    """A vision config (`arch.config_modality`: a ViT's or a convnet's) needs ``task: image-classification``, a text
    one a text task; ``teacher`` names the teacher in the message, ``detail`` follows "is a text / vision model"."""
    from .models.arch import config_modality  # (torch, only when a teacher is checked)

    vision = config_modality(config) == "vision"
    if vision != (task == "image-classification"):
        kind = "vision" if vision else "text"
        raise RecipeError(
            f"{teacher} is a {kind} model{detail} but data.task is {task!r}; set data.task to "
            f"{'image' if vision else 'text'}-classification or use a {'text' if vision else 'vision'} teacher."
        )


def check_data(where: str, data) -> None:
    for key in ("train_limit", "eval_limit", "test_limit"):
        value = getattr(data, key)
        if value is not None and value < 1:
            raise RecipeError(f"{where} data: {key} must be >= 1 (or null for no limit), got {value}.")
    if data.max_length < 1:
        raise RecipeError(f"{where} data: max_length must be >= 1 token, got {data.max_length}.")
    inputs = [data.text_column, data.text_pair_column] if data.task == "text-classification" else [data.image_column]
    if data.label_column in inputs:
        raise RecipeError(
            f"{where} data: label_column {data.label_column!r} is also an input column; point label_column at "
            "the column that holds the labels."
        )
    check_metric(f"{where} data", data.metric, data.trust_remote_metric)
    if data.files and data.source != "files":
        raise RecipeError(
            f"{where} data: files are only read with source: files (source is {data.source!r}); set source: files "
            "or remove files."
        )
    if data.source == "files" and data.files:
        bad = {k: v for k, v in data.files.items() if not isinstance(v, str) or not v}
        if bad:
            raise RecipeError(f"{where} data: files must map split names to file paths, got {bad}.")
        for key in ("train_split", "eval_split", "test_split"):
            split = getattr(data, key)
            if split is not None and split not in data.files:
                raise RecipeError(
                    f"{where} data: {key} {split!r} is not one of data.files {sorted(data.files)}; set data.{key} "
                    f"to one of them{' or null' if key != 'train_split' else ''}."
                )
    if data.eval_split is None and data.test_split is None:
        raise RecipeError(f"{where} data: eval_split and test_split are both null; the results need one of them.")
    reported = ("test_split", data.test_split) if data.test_split is not None else ("eval_split", data.eval_split)
    same_file = (
        data.source == "files"
        and data.files
        and reported[1] in data.files
        and data.train_split in data.files
        and Path(data.files[reported[1]]).expanduser().resolve()
        == Path(data.files[data.train_split]).expanduser().resolve()
    )
    if reported[1] == data.train_split or same_file:
        raise RecipeError(
            f"{where} data: {reported[0]} {reported[1]!r} is the training data too"
            f"{' (the same file)' if same_file and reported[1] != data.train_split else ''}, so the results would "
            "measure memorisation. Point it at held-out rows (e.g. a validation or test file)."
        )


def check_seed(where: str, seed: Any) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise RecipeError(f"{where}: seed must be an integer in 0..2**32-1, got {seed!r}.")


def check_stage_order(where: str, stages) -> None:
    """Train first, quantize last: nothing trains a quantized model, and nothing is quantized twice."""
    quantized = None
    for index, stage in enumerate(stages):
        spec = stage.spec
        if quantized is not None and (spec.trains or spec.quantizes):
            what = "quantizes again" if spec.quantizes else f"trains ({stage.method})"
            raise RecipeError(
                f"{where} stage {index} ({stage.name}) {what} after the quantize stage {quantized}: train first, "
                "quantize last. Move the quantize stage after every training stage (and keep one)."
            )
        if spec.quantizes:
            quantized = f"{index} ({stage.name})"


_AT_LEAST_ONE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")


def check_training_fields(where: str, fields: dict) -> None:
    """TrainingArguments accepts values that only fail (or silently do nothing) once training starts."""
    for key in _AT_LEAST_ONE:
        if key in fields and fields[key] < 1:
            raise RecipeError(f"{where}: {key} must be >= 1, got {fields[key]}.")
    rate = fields.get("learning_rate")
    if rate is not None and not (math.isfinite(rate) and rate >= 0):
        raise RecipeError(f"{where}: learning_rate must be a finite number >= 0, got {rate}.")
    steps, epochs = fields.get("max_steps", -1), fields.get("num_train_epochs", 3.0)
    if steps == 0 or (steps < 0 and not (math.isfinite(epochs) and epochs > 0)):
        raise RecipeError(
            f"{where}: nothing to train (max_steps={steps}, num_train_epochs={epochs}); set max_steps >= 1 or "
            "num_train_epochs > 0."
        )


# ---- tokenizers -------------------------------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model", "merges.txt")  # fmt: skip


def check_tokenizer(tokenizer, config, where: str, folder: str | Path | None = None) -> None:
    """A text model's tokenizer must fit its embedding table. Without tokenizer files, transformers builds a
    tokenizer of the special tokens alone and every word becomes ``[UNK]`` (meaningless metrics, and every stage
    output would ship that tokenizer); ids beyond ``vocab_size`` index past the embeddings."""
    local = Path(folder).expanduser() if folder is not None else None
    if local is not None and local.is_dir() and not any((local / name).is_file() for name in TOKENIZER_FILES):
        raise RecipeError(
            f"{where} has no tokenizer files (none of {list(TOKENIZER_FILES[:3])}, ...): save the tokenizer the "
            "model was trained with into the folder (tokenizer.save_pretrained(folder))."
        )
    size, rows = len(tokenizer), getattr(config, "vocab_size", None)
    if not isinstance(rows, int) or rows < 1:
        return
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    past = sorted(token for token, index in vocab.items() if index >= rows)  # ids, not the count, index the table
    if past:
        raise RecipeError(
            f"{where}: the tokenizer gives {len(past)} token(s) ids at or past the model's vocab_size={rows} "
            f"(e.g. {past[:3]}), so they index past its embedding table. Use the model's own tokenizer (or resize "
            "the embeddings and save)."
        )
    if size < rows // 2:
        raise RecipeError(
            f"{where}: the tokenizer has only {size} tokens for a vocab_size={rows} model, so most words would "
            "become unknown tokens; it is not this model's tokenizer. Save the model's own tokenizer with it."
        )
