"""`export_onnx`: a stage output (distilled, pruned or quantized) to ONNX, verified on ONNX Runtime.

Plain checkpoints export to fp32 ONNX with ``torch.onnx.export`` (the TorchScript exporter, ``dynamo=False``: on
this CPU its graph runs 1.2x faster on ORT than the dynamo exporter's at 8x128) with dynamic batch and sequence
length; quantized checkpoints export to int8 ONNX with the same decisions (see
`quantized.py`). Every export is checked against the PyTorch model on sample inputs: max |diff| of the outputs
and argmax agreement (fidelity) are printed and stored in ``onnx_export.json`` beside ``model.onnx``, with the
tokenizer / image processor, ``config.json`` and a README section. onnx / onnxruntime / onnxscript come with
the ``onnx`` extra and are imported only here, only when exporting.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import get_args

import torch
from safetensors import SafetensorError
from torch import Tensor, nn

from ..models.arch import modality_of
from ..quant.serialization import GUARD_FIELD
from .card import REPORT_NAME, write_readme
from .check import NUM_CHECK_SAMPLES, clear_disagreements, passes, quantization_noise, verify
from .embedding import (
    CHECKED_OUTPUTS,
    EMBEDDING_OUTPUTS,
    TOKEN_EMBEDDINGS,
    PooledReference,
    Pooling,
    embedding_outputs,
    min_cosine,
    pooling_of,
)
from .fusion import eager_attention, fuse, optimizer_type
from .quantized import DynamicActivations, ExportError, float_stand_ins, is_quantized, rewrite_quantized

ONNX_NAME = "model.onnx"
OUTPUTS = ("logits", "start_logits", "end_logits")
OPSET = 18
logger = logging.getLogger(__name__)


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how closely ONNX Runtime reproduces the PyTorch model."""

    onnx_path: str
    precision: str  # "fp32" or the quantization method
    inputs: list[str]
    outputs: list[str]
    max_abs_diff: float
    fidelity: float  # argmax agreement, ORT vs PyTorch, over every output row
    num_samples: int
    near_ties: int  # disagreements where PyTorch's own margin is within the noise (see `verify`)
    passed: bool  # fp32: max |diff| <= 1e-4; quantized: see INT8_MAX_CLEAR_DISAGREEMENT / INT8_MAX_NOISE_RATIO
    onnx_mb: float
    opset: int = OPSET
    quantized_layers: dict[str, str] = field(default_factory=dict)
    fused_ops: dict[str, int] = field(default_factory=dict)  # ORT's fused kernels in the graph (`fusion.py`)
    min_cosine: float | None = None  # an embedder: smallest cosine, ORT vs PyTorch sentence embedding
    pooling: str | None = None  # an embedder: how its graph pools (`embedding.Pooling.describe`)
    median_abs_diff: float | None = None  # the median over rows of a row's max |ORT - PyTorch|
    int8_noise: float | None = None  # the same between the quantized model and its weights in float (quantized only)
    rows_beyond_noise: int | None = None  # rows whose |diff| exceeds a few times their own int8 noise (quantized)

    def summary(self) -> str:
        verdict = "ok" if self.passed else "CHECK FAILED"
        noise = "" if self.int8_noise is None else f", int8 noise {self.int8_noise:.2e}"
        if self.min_cosine is not None:  # an embedder
            noise += f", {self.pooling}, min cosine {self.min_cosine:.6f}"
        return (f"{self.onnx_path}: {self.precision}, max |diff| {self.max_abs_diff:.2e}{noise}, fidelity "
                f"{self.fidelity:.4f} on {self.num_samples} samples ({self.near_ties} near ties), "
                f"{self.onnx_mb:.1f} MB" + (f", fused: {self.fused_ops}" if self.fused_ops else "") +
                f" ({verdict})")  # fmt: skip


def require_onnx() -> None:
    """Raise a one-line error naming the extra when onnx / onnxruntime / onnxscript are missing."""
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'hf-compress[onnx]'.")


def load_for_export(source: str | Path) -> nn.Module:
    """Load a model folder with the class named in its config.json, or raise a one-line ExportError."""
    import transformers

    from ..models import rnn  # noqa: F401  (the RNN student's Auto classes; the quantizer came with GUARD_FIELD)

    path = Path(source)
    if not path.is_dir():
        raise ExportError(f"{path} is not a folder; pass a model folder written by save_pretrained.")
    if not (path / "config.json").is_file():
        raise ExportError(f"{path} is not a model folder (no config.json); pass a stage output folder.")
    config = json.loads((path / "config.json").read_text())
    architectures = config.get("architectures") or []
    cls = getattr(transformers, architectures[0], None) if architectures else None
    if cls is None:
        raise ExportError(f"{path}/config.json names no transformers model class (architectures={architectures}); "
                          "export a model with a task head, e.g. BertForSequenceClassification.")  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls.from_pretrained(str(path)).eval()
    except SafetensorError as err:
        raise ExportError(
            f"The weights in {path} are truncated or corrupt ({err}); copy the folder again or re-run the stage "
            "that wrote it."
        ) from err
    except (OSError, ValueError, RuntimeError) as err:
        raise ExportError(f"Could not load the model in {path}: {str(err).splitlines()[0]}") from err


def input_names(model: nn.Module, processor=None) -> list[str]:
    if modality_of(model) == "vision":
        return ["pixel_values"]
    names = ["input_ids", "attention_mask"]
    accepted = inspect.signature(model.forward).parameters
    wants_types = getattr(processor, "model_input_names", None)
    wants_types = "token_type_ids" in wants_types if wants_types else getattr(model.config, "type_vocab_size", 0) > 1
    if "token_type_ids" in accepted and wants_types:
        names.append("token_type_ids")
    return names


def sample_inputs(model: nn.Module, names: list[str], batch: int, length: int, seed: int = 0) -> dict[str, Tensor]:
    """Seeded random inputs: token ids with padding (ragged lengths; right, left and a hole) and two segments,
    or images."""
    g = torch.Generator().manual_seed(seed)
    config = model.config
    if names == ["pixel_values"]:
        size = config.image_size
        return {"pixel_values": torch.randn(batch, config.num_channels, size, size, generator=g)}
    length = min(length, getattr(config, "max_position_embeddings", length))
    ids = torch.randint(min(5, config.vocab_size - 1), config.vocab_size, (batch, length), generator=g)
    lengths = torch.randint(max(1, length // 2), length + 1, (batch,), generator=g)
    lengths[0] = length
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    # every third row left-padded and every fifth with a hole: a graph that assumes right padding fails the check
    mask[2::3] = mask[2::3].flip(1)
    if length > 3:
        mask[4::5, 1] = 0
    inputs = {"input_ids": ids * mask, "attention_mask": mask}
    if "token_type_ids" in names:
        inputs["token_type_ids"] = (torch.arange(length)[None, :] >= lengths[:, None] // 2).long() * mask
    return inputs


class _Outputs(nn.Module):
    """The model with named tensor inputs and a tuple of the head's outputs (what the exporter traces); with
    ``pooling``, a bare encoder's sentence embedding and token states (`embedding.py`)."""

    def __init__(self, model: nn.Module, outputs: list[str], pooling: Pooling | None = None) -> None:
        super().__init__()
        self.model, self.outputs, self.pooling = model, outputs, pooling

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None):
        given = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                     pixel_values=pixel_values)  # fmt: skip
        out = self.model(**{k: v for k, v in given.items() if v is not None})
        if self.pooling is not None:
            return embedding_outputs(out, attention_mask, self.pooling, self.outputs)
        return tuple(out[name] for name in self.outputs)


def head_outputs(model: nn.Module, inputs: dict[str, Tensor]) -> list[str]:
    """The head outputs to export; `EMBEDDING_OUTPUTS` for a bare text encoder (no head: an embedder)."""
    with torch.inference_mode():
        out = model(**inputs)
    names = [name for name in OUTPUTS if isinstance(out.get(name), Tensor)]
    if not names and isinstance(out.get("last_hidden_state"), Tensor) and "input_ids" in inputs:
        return list(EMBEDDING_OUTPUTS)
    if not names:
        raise ExportError(f"{type(model).__name__} has no supported task head (it returns {list(out.keys())}); "
                          f"ONNX export supports models returning {' / '.join(OUTPUTS)}, e.g. "
                          "...ForSequenceClassification, ...ForTokenClassification, ...ForQuestionAnswering, "
                          "...ForImageClassification, and bare text encoders (exported as embedders).")  # fmt: skip
    return names


def _export_proto(model: nn.Module, names: list[str], outputs: list[str], example: dict[str, Tensor],
                  pooling: Pooling | None = None):  # fmt: skip
    dims = {"input_ids": {0: "batch", 1: "sequence"}, "pixel_values": {0: "batch"}}
    dynamic = {name: dims.get(name, dims["input_ids"]) for name in names}
    dynamic |= {TOKEN_EMBEDDINGS: {0: "batch", 1: "sequence"}} if TOKEN_EMBEDDINGS in outputs else {}
    wrapper = _Outputs(model, outputs, pooling).eval()
    log = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), torch.no_grad():
            warnings.simplefilter("ignore")
            buffer = io.BytesIO()
            torch.onnx.export(wrapper, (), buffer, kwargs=example, dynamo=False, opset_version=OPSET,
                              input_names=names, output_names=outputs, dynamic_axes=dynamic,
                              verbose=False)  # fmt: skip
    except Exception as err:  # the exporter's own errors are many classes; give the first line and the cause
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ExportError(f"torch.onnx.export cannot export {type(model).__name__}: {first[:300]}") from err
    import onnx

    return onnx.load_from_string(buffer.getvalue())


def _ort_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def source_processor(source: Path | None, model: nn.Module):
    """The tokenizer / image processor saved in the model folder (None when it has none), after checking that a
    tokenizer fits the model. A text folder without tokenizer files exports without one (transformers would build
    a 5-token stand-in that turns every word into ``[UNK]``); a tokenizer that does not fit is an ExportError."""
    if source is None:
        return None
    from transformers import AutoImageProcessor, AutoTokenizer

    from ..validation import TOKENIZER_FILES, RecipeError, check_tokenizer

    text = isinstance(getattr(model.config, "vocab_size", None), int)
    if text and not any((source / name).is_file() for name in TOKENIZER_FILES):
        logger.warning("No tokenizer files in %s; the ONNX folder has no tokenizer.", source)
        return None
    for loader in (AutoTokenizer, AutoImageProcessor) if text else (AutoImageProcessor,):
        try:
            processor = loader.from_pretrained(str(source))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if loader is AutoTokenizer:
            try:
                check_tokenizer(processor, model.config, str(source), source)
            except RecipeError as err:
                raise ExportError(str(err)) from err
        return processor
    logger.warning("No tokenizer or image processor in %s; the ONNX folder has none.", source)
    return None


def default_output_dir(folder: str | Path) -> Path:
    """``FOLDER-onnx``, beside the model folder (``hf-compress export``'s default)."""
    text = str(folder).rstrip("/\\")
    path = Path(text or folder)
    if path.name in ("", ".", ".."):
        path = path.resolve()
    return path.with_name(path.name + "-onnx")


def check_output_dir(source: Path | None, output_dir: Path) -> None:
    """Refuse, before anything is written, an output folder that would destroy a checkpoint or a user's files.

    It must not be the model folder, lie inside it or contain it (symlinks resolved): the export writes its own
    ``config.json`` (without the quantization entry) and README.md, and the checkpoint would no longer load.
    An existing folder must be empty or a previous export: one that holds ``onnx_export.json`` (written by every
    finished export), or only ``*.onnx`` files (one stopped after saving the graph). Anything else holds files
    export did not write, which it would overwrite."""
    out = output_dir.resolve()
    suggestion = default_output_dir(source) if source is not None else None
    if suggestion is not None and suggestion.resolve() == out:
        suggestion = None
    hint = f", e.g. {suggestion}" if suggestion is not None else ""
    if source is not None:
        src = source.resolve()
        relation = (
            "is" if out == src else "is inside" if src in out.parents else "contains" if out in src.parents else ""
        )
        if relation:
            raise ExportError(
                f"The output folder {output_dir} {relation} the model folder {source}: the export would overwrite its "
                f"config.json and README.md and the checkpoint would no longer load. Choose a folder outside it{hint}."
            )
    if out.exists() and not out.is_dir():
        raise ExportError(f"The output folder {output_dir} is a file; choose a folder{hint}.")
    if not out.is_dir():
        return
    names = sorted(p.name for p in out.iterdir())
    if not names or REPORT_NAME in names or all(name.endswith(".onnx") for name in names):
        return
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise ExportError(
        f"The output folder {output_dir} holds files that hf-compress export did not write ({shown}; no "
        f"{REPORT_NAME}), which the export would overwrite. Choose a new or empty folder{hint}, or empty it."
    )


def export_onnx(
    model_or_dir: nn.Module | str | Path,
    output_dir: str | Path,
    *,
    processor=None,
    inputs: dict[str, Tensor] | None = None,
    num_samples: int = NUM_CHECK_SAMPLES,
    sequence_length: int = 32,
    dynamic_activations: DynamicActivations = "torch",
    optimize: bool = True,
) -> ExportReport:
    """Export a stage output (folder or loaded model) to ``output_dir/model.onnx`` and verify it on ORT.

    processor: tokenizer / image processor to save beside the model (default: the one in the source folder).
    inputs: sample inputs to verify on (default: ``num_samples`` seeded random rows of ``sequence_length``
    tokens with ragged padding, or random images).
    dynamic_activations: ``int8_dynamic`` layers quantize activations per call as torch does (``"torch"``, 7-bit
    range: ORT reproduces the PyTorch model) or with ORT's fused 8-bit DynamicQuantizeLinear (``"ort"``).
    optimize: for BERT- and ViT-family encoders, export eager attention and apply ONNX Runtime's transformer
    fusions (`fusion.py`); the fused graph is kept only if it passes the same check as the plain one.
    output_dir must not overlap the model folder and must be new, empty or a previous export (`check_output_dir`).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ExportError(
            f"num_samples must be a whole number >= 1 (rows the export is checked on), got {num_samples!r}."
        )
    if dynamic_activations not in get_args(DynamicActivations):
        choices = list(get_args(DynamicActivations))
        raise ExportError(f"dynamic_activations={dynamic_activations!r} is not supported; choose one of {choices}.")
    require_onnx()
    import onnx

    source = None if isinstance(model_or_dir, nn.Module) else Path(model_or_dir)
    model = model_or_dir.eval() if source is None else load_for_export(source)
    check_output_dir(source, Path(output_dir))  # before anything is written
    names = input_names(model, processor)
    processor = processor if processor is not None else source_processor(source, model)
    check = _check_inputs(model, names, inputs, num_samples, sequence_length)
    example = sample_inputs(model, names, batch=2, length=min(16, sequence_length), seed=1)
    outputs = head_outputs(model, example)
    pooling = pooling_of(source) if outputs == EMBEDDING_OUTPUTS else None  # a bare encoder: an embedder
    quantized = is_quantized(model)
    float_model, plan = float_stand_ins(model) if quantized else (model, {})
    fusable = optimize and optimizer_type(model) is not None
    with eager_attention(float_model) if fusable else contextlib.nullcontext():
        proto = _export_proto(float_model, names, outputs, example, pooling)
    if plan:
        proto = rewrite_quantized(proto, plan, dynamic_activations, skip_unused=pooling is not None)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = output_dir / ONNX_NAME
    onnx.save_model(proto, str(onnx_path))
    onnx.checker.check_model(str(onnx_path))

    reference, checked_outputs, noise = _reference(model, float_model, pooling, outputs, check, dynamic_activations)
    checked = verify(_ort_session(onnx_path), reference, check, checked_outputs, noise)
    passed = passes(checked, quantized)
    fused_ops: dict[str, int] = {}
    if fusable and passed:
        proto, checked, fused_ops = _try_fusion(proto, reference, bool(plan), quantized, onnx_path, check,
                                                checked_outputs, checked, noise)  # fmt: skip
    if pooling is not None:
        checked["min_cosine"] = min_cosine(_ort_session(onnx_path), reference, check)
        checked["pooling"] = pooling.describe()
    # the inputs of the graph kept: the exporter drops what the model ignores (token_type_ids for the RNN student)
    # and the optimizer may prune an input its fusions made unused
    graph_inputs = {i.name for i in proto.graph.input}
    names = [name for name in names if name in graph_inputs]
    report = ExportReport(
        onnx_path=str(onnx_path), precision=_precision(model, plan), inputs=names, outputs=outputs, **checked,
        passed=passed, onnx_mb=onnx_path.stat().st_size / 2**20,
        quantized_layers={name: kind for name, (kind, _) in plan.items()}, fused_ops=fused_ops,
    )  # fmt: skip
    _write_folder(output_dir, report, model, processor, source)
    if passed:  # (a failed check is a warning below; the CLI prints the summary either way)
        logger.debug("exported to %s: %s", output_dir, report.summary())
    else:
        logger.warning("ONNX Runtime does not reproduce the PyTorch model closely: %s", report.summary())
    return report


def _reference(model, float_model, pooling: Pooling | None, outputs: list[str], check: dict[str, Tensor],
               dynamic_activations: DynamicActivations):  # fmt: skip
    """What the graph is checked against: (the PyTorch side, the outputs compared, a quantized model's own noise).

    An embedder is checked on its sentence embedding, computed from the PyTorch encoder as the graph does. ORT's
    8-bit activations are another quantization than torch's 7-bit range: that graph is checked against the model's
    weights in float, within the model's own int8 noise, not against torch's rounding."""
    judged = [model, float_model] if pooling is None else [PooledReference(m, pooling) for m in (model, float_model)]
    checked_outputs = CHECKED_OUTPUTS if pooling is not None else outputs
    quantized = is_quantized(model)
    noise = quantization_noise(*judged, check, checked_outputs) if quantized else None
    reference = judged[1] if quantized and dynamic_activations == "ort" else judged[0]
    return reference, checked_outputs, noise


def _check_inputs(model, names: list[str], inputs: dict | None, num_samples: int, length: int) -> dict[str, Tensor]:
    """The rows the export is verified on: the caller's ``inputs`` (every input the model takes) or random ones."""
    if inputs is None:
        return sample_inputs(model, names, batch=num_samples, length=length, seed=2)
    missing = [name for name in names if name not in inputs]
    if missing:
        raise ExportError(f"inputs lack {missing}, which the exported model takes; pass all of {names}.")
    return {name: inputs[name] for name in names}


def _write_folder(output_dir: Path, report: ExportReport, model, processor, source: Path | None) -> None:
    """Beside model.onnx: the report, the config, the processor, a README and the source folder's extra files."""
    stored = {**asdict(report), "onnx_path": ONNX_NAME}  # relative: the folder is pushed as is
    (output_dir / REPORT_NAME).write_text(json.dumps(stored, indent=2) + "\n")
    _save_config(model, output_dir)
    if processor is not None:
        processor.save_pretrained(str(output_dir))
    write_readme(source, output_dir, report)
    if source is not None:
        copy_extra(source, output_dir)


def _try_fusion(proto, model, int8_layers: bool, quantized: bool, onnx_path: Path, check, outputs, plain: dict,
                noise=None):  # fmt: skip
    """Fuse the graph with ORT's optimizer; keep it in ``onnx_path`` only if it passes the plain graph's bar (and,
    quantized, disagrees clearly no more often). Returns (the kept graph, its check, {fused op: count})."""
    import onnx

    candidate = onnx_path.with_name("fused-" + onnx_path.name)
    try:
        fused, stats = fuse(proto, model, int8_layers)
        if not stats:
            return proto, plain, {}
        onnx.save_model(fused, str(candidate))
        checked = verify(_ort_session(candidate), model, check, outputs, noise)
        if passes(checked, quantized) and clear_disagreements(checked) <= clear_disagreements(plain):
            candidate.replace(onnx_path)
            return fused, checked, stats
        logger.info("The fused graph of %s fails the check (%s); keeping the plain graph.", onnx_path, checked)
    except Exception as err:  # the optimizer's matchers and ORT's kernels raise many kinds; the plain graph stays
        logger.info("ONNX Runtime's fusions failed on %s (%s); keeping the plain graph.", onnx_path, err)
    finally:
        candidate.unlink(missing_ok=True)
    return proto, plain, {}


def _precision(model: nn.Module, plan: dict) -> str:
    if not plan:
        return "int8_embeddings" if is_quantized(model) else "fp32"
    kinds = sorted({kind for kind, _ in plan.values()})
    return kinds[0] if len(kinds) == 1 else "+".join(kinds)


def _save_config(model: nn.Module, output_dir: Path) -> None:
    """config.json without the quantization entry: the ONNX graph carries the quantization itself."""
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop(GUARD_FIELD, None)  # the plugin-required guard of a quantized checkpoint: the ONNX folder needs none
    (output_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def check_onnx_folder(folder: Path, onnx_files: list[str]) -> None:
    """What `push` checks in an export folder: the ONNX files pass the ONNX checker (needs the onnx extra)."""
    try:
        import onnx
    except ImportError as err:  # FileNotFoundError: the CLI's one-line, exit-2 class for a folder it cannot push
        raise FileNotFoundError(f"Checking {folder} needs onnx: pip install 'hf-compress[onnx]'.") from err

    for name in onnx_files:
        try:
            onnx.checker.check_model(str(folder / name))
        except (onnx.checker.ValidationError, OSError) as err:
            raise FileNotFoundError(f"{folder / name} is not a valid ONNX model: {str(err).splitlines()[0]}") from err


def copy_extra(source: Path, output_dir: Path, names=("recipe.resolved.yaml",)) -> None:
    for name in names:
        if (source / name).is_file():
            shutil.copy2(source / name, output_dir / name)
