"""ONNX Runtime benchmark: our models exported with `export_onnx` beside what a user would do without us.

Rows (MiniLM-L6 fine-tuned on Rotten Tomatoes): torch fp32 teacher (the reference), ORT fp32 and ORT int8 of the
teacher, of the HomoDistil model (half width, from the prune benchmark's cache) and of the pruned + int8 model,
and the peer "ORT quantize_dynamic of the teacher". Latency at 8x128 and 1x128 is a ratio to the torch fp32
teacher, measured interleaved in one process (same thread count for torch and ORT); fidelity is argmax
agreement with the torch fp32 teacher on the test set, and the export's own check against its PyTorch model.

    python -m benchmarks onnx            # ~10 min on 2 cores once the teacher and HomoDistil model are cached
    python -m benchmarks onnx --frontier # the pruned rows use the depth + width model of `prune --frontier`
    python -m benchmarks onnx --quick    # 200 test rows, 5 timing repetitions; trains nothing it cannot find
                                         # cached (untrained head / 4-step HomoDistil: accuracy is meaningless)
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from hf_compress import HomoDistilConfig, HomoDistilTrainer, QuantizationConfig, evaluation, quantize
from hf_compress.data import demo_model_path
from hf_compress.export import export_onnx
from hf_compress.export.runtime import OrtModel

from . import common
from .prune import FRONTIER_CACHE, HOMODISTIL_CACHE, SHAPES, TRAINING

PEER = "ORT quantize_dynamic of the teacher (peer)"
FUSED_PEER = "ORT optimizer + quantize_dynamic of the teacher (peer)"  # what an optimum user would do
REFERENCE = "torch fp32 teacher"


def _teacher(quick: bool) -> tuple[str, bool]:
    """(teacher folder, trained?) — the cached fine-tuned teacher, or in --quick the base MiniLM + a new head."""
    cached = common.CACHE / "teacher-minilm-rt"
    if (cached / "config.json").is_file() or not quick:
        return common.text_teacher(), True
    out = common.CACHE / "untrained-minilm-head"
    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(demo_model_path(), num_labels=2)
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(demo_model_path()).save_pretrained(out)
    return str(out), False


def _homodistil(teacher, data, collator, quick: bool, frontier: bool = False):
    """The prune benchmark's HomoDistil model (cached by `python -m benchmarks prune`), else trained here; with
    ``frontier`` the depth + width model cached by `python -m benchmarks prune --frontier` (never trained here)."""
    if frontier:
        if not (FRONTIER_CACHE / "config.json").is_file():
            raise SystemExit(f"No frontier model in {FRONTIER_CACHE}: run `python -m benchmarks prune --frontier`.")
        model = AutoModelForSequenceClassification.from_pretrained(FRONTIER_CACHE).eval()
        return (
            model,
            f"cached frontier model ({model.config.num_hidden_layers} layers, hidden {model.config.hidden_size})",
        )
    if (HOMODISTIL_CACHE / "config.json").is_file():
        return AutoModelForSequenceClassification.from_pretrained(HOMODISTIL_CACHE).eval(), "cached"
    quick_cache = common.CACHE / "homodistil-minilm-rt-quick"  # a 4-step plumbing model, never the real one
    if quick and (quick_cache / "config.json").is_file():
        return AutoModelForSequenceClassification.from_pretrained(quick_cache).eval(), "4 steps (quick, cached)"
    steps = 4 if quick else 300
    args = HomoDistilConfig(**common.train_kwargs(tempfile.mkdtemp(), max_steps=steps, warmup_steps=20,
                                                  temperature=2.0, kd_weight=1.0, hidden_weight=1.0,
                                                  **TRAINING["text"]),
                            **SHAPES["text"], prune_start_step=0, prune_end_step=max(2, int(0.6 * steps)),
                            prune_every=max(1, int(0.6 * steps) // 20))  # fmt: skip
    train = data["train"].select(range(256)) if quick else data["train"]
    trainer = HomoDistilTrainer(model=copy.deepcopy(teacher), teacher_model=teacher, args=args,
                                train_dataset=train, data_collator=collator)  # fmt: skip
    trainer.train()
    model = trainer.sliced_model().eval()
    model.set_attn_implementation("sdpa")
    model.save_pretrained(quick_cache if quick else HOMODISTIL_CACHE)
    return model, f"trained {steps} steps here"


@torch.inference_mode()
def _logits(model, dataset, collator) -> torch.Tensor:
    out = []
    for batch in DataLoader(dataset, batch_size=32, collate_fn=collator):
        batch.pop("labels")
        out.append(model(**batch).logits.float())
    return torch.cat(out)


def run(quick: bool, frontier: bool = False) -> dict:
    teacher_path, trained = _teacher(quick)
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    data = common.rt_data(tokenizer)
    collator = DataCollatorWithPadding(tokenizer)
    test = data["test"].select(range(200)) if quick else data["test"]
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path).eval()
    pruned, pruned_source = _homodistil(teacher, data, collator, quick, frontier)
    work = Path(tempfile.mkdtemp(prefix="onnx-bench-"))
    int8 = QuantizationConfig(method="int8_dynamic")
    teacher_int8, pruned_int8 = quantize(copy.deepcopy(teacher), int8), quantize(copy.deepcopy(pruned), int8)
    sources = {  # name -> (model to export, how int8_dynamic layers quantize activations[, ORT fusions])
        "ORT fp32 teacher, no ORT fusions": (teacher, "torch", False),
        "ORT fp32 teacher": (teacher, "torch"),
        "ORT int8 teacher (hf_compress int8_dynamic)": (teacher_int8, "torch"),
        "ORT int8 teacher (hf_compress int8_dynamic, ORT 8-bit activations)": (teacher_int8, "ort"),
        "ORT fp32 HomoDistil": (pruned, "torch"),
        "ORT int8 HomoDistil (pruned + int8_dynamic)": (pruned_int8, "torch"),
        "ORT int8 HomoDistil (pruned + int8_dynamic, ORT 8-bit activations)": (pruned_int8, "ort"),
    }
    batch = collator([test[i] for i in range(min(64, len(test)))])  # the export checks on real sentences
    check = {k: v for k, v in batch.items() if k != "labels"}
    entries, exports = {}, {}
    for index, (name, (model, dynamic, *fusions)) in enumerate(sources.items()):
        start = time.perf_counter()
        report = export_onnx(model, work / str(index), processor=tokenizer, inputs=check,
                             dynamic_activations=dynamic, optimize=fusions[0] if fusions else True)  # fmt: skip
        exports[name] = {"export_s": time.perf_counter() - start, "export_max_diff": report.max_abs_diff,
                         "export_fidelity": report.fidelity, "size_mb": report.onnx_mb}  # fmt: skip
        entries[name] = OrtModel(work / str(index) / "model.onnx")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the peers: ORT's quantizer on the plain export (torch.onnx.export + quantize_dynamic) and on the graph
    # fused by ORT's transformer optimizer (optimum's optimize-then-quantize; Attention becomes QAttention)
    for peer, source in ((PEER, "0"), (FUSED_PEER, "1")):
        start = time.perf_counter()
        peer_path = work / f"peer-{source}.onnx"
        # com.microsoft fused ops defeat the quantizer's type inference; ORT's message says to give it FLOAT
        quantize_dynamic(str(work / source / "model.onnx"), str(peer_path), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fmt: skip
        exports[peer] = {"export_s": time.perf_counter() - start, "size_mb": peer_path.stat().st_size / 2**20}
        entries[peer] = OrtModel(peer_path)
    entries["torch int8 teacher (hf_compress int8_dynamic)"] = teacher_int8
    entries["torch HomoDistil + int8_dynamic"] = pruned_int8

    latency = common.latency_ratios(teacher, entries, reps=5 if quick else 30)
    reference_logits = _logits(teacher, test, collator)
    labels = torch.tensor(test["labels"])
    rows = []
    for name, model in {REFERENCE: teacher, **entries}.items():
        logits = _logits(model, test, collator)
        lat = latency["__reference__" if name == REFERENCE else name]
        size = exports[name]["size_mb"] if name in exports else common.size_or_nan(model)
        rows.append({
            "model": name, "accuracy": float((logits.argmax(-1) == labels).float().mean()),
            "agree_teacher": float((logits.argmax(-1) == reference_logits.argmax(-1)).float().mean()),
            "lat_8x128": lat["8x128"], "lat_1x128": lat["1x128"], "speedup_8x128": 1 / lat["8x128"],
            "speedup_1x128": 1 / lat["1x128"], "size_mb": size,
            **{k: v for k, v in exports.get(name, {}).items() if k != "size_mb"},
        })  # fmt: skip
        print(f"[onnx] {name}: acc {rows[-1]['accuracy']:.4f} 8x128 {lat['8x128']:.3f} 1x128 {lat['1x128']:.3f}")
    return {"kind": "text", "rows": rows, "teacher_ms": latency["__reference__"], "teacher_trained": trained,
            "control": latency[evaluation.CONTROL],
            "homodistil": pruned_source, "threads": common.THREADS}  # fmt: skip


COLUMNS = [("model", "model"), ("accuracy", "test acc"), ("agree_teacher", "agreement with torch fp32 teacher"),
           ("export_fidelity", "export fidelity"), ("export_max_diff", "export max abs diff"),
           ("size_mb", "MB"), ("lat_8x128", "latency 8x128 (ratio)"), ("lat_1x128", "latency 1x128 (ratio)"),
           ("speedup_8x128", "speed-up 8x128"), ("speedup_1x128", "speed-up 1x128")]  # fmt: skip


def report(result: dict) -> str:
    ref = result["teacher_ms"]
    lines = [f"### ONNX Runtime: MiniLM-L6 on Rotten Tomatoes (latency = ratio to the torch fp32 teacher, "
             f"{result['threads']} threads)\n", common.markdown_table(result["rows"], COLUMNS),
             f"\ntorch fp32 teacher medians: 8x128 {ref['8x128_ms']:.1f} ms, 1x128 {ref['1x128_ms']:.1f} ms. "
             f"HomoDistil model: {result['homodistil']}."]  # fmt: skip
    control = result.get("control")
    if control:
        lines.append(
            f"Control, the teacher timed against itself: {control['8x128']:.3f} at 8x128, "
            f"{control['1x128']:.3f} at 1x128 ({control['8x128_reps']} / {control['1x128_reps']} rounds)."
        )
        lines.append(evaluation.control_warning(control) or "The control is within 5 %: the ratios can be trusted.")
    if not result["teacher_trained"]:
        lines.append("Quick run without a cached teacher: untrained classification head, accuracy is meaningless.")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--frontier",
        action="store_true",
        help="use the depth + width model of `python -m benchmarks prune --frontier` as the HomoDistil model",
    )
    args = parser.parse_args(argv)
    common.setup()
    result = run(args.quick, args.frontier)
    name = "onnx-frontier" if args.frontier else "onnx"
    path = common.write_json(f"{name}-quick" if args.quick else name, {"suite": "onnx", "argv": argv, **result})
    print(report(result))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
