"""Quantization benchmark: every hf_compress method beside the peers a user would pick instead (torch.ao
quantize_dynamic, torchao int8 weight-only, optimum-quanto int8 weights and W8A8), on the MiniLM-L6 teacher
fine-tuned on Rotten Tomatoes and on the Fashion-MNIST ViT; plus the int8 kernel ceiling of this CPU.

    python -m benchmarks quant                 # text + vision, ~20 min on 2 CPU cores (teachers are cached)
    python -m benchmarks quant --only vision   # one half
    python -m benchmarks quant --quick         # small test subset, few timing repetitions
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
from transformers import (
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
)

from hf_compress import QuantizationConfig, quantize

from . import common, peers

FFN_OUT = {"text": "*.layer.*.output.dense", "vision": "*.mlp.fc2"}


def variants(kind: str) -> dict[str, QuantizationConfig]:
    return {
        "hf_compress int8_dynamic": QuantizationConfig(method="int8_dynamic"),
        "hf_compress int8_dynamic + SmoothQuant 0.5": QuantizationConfig(method="int8_dynamic", smoothquant_alpha=0.5),
        "hf_compress int8_dynamic, FFN-out fp32": QuantizationConfig(method="int8_dynamic", keep_fp32=[FFN_OUT[kind]]),
        "hf_compress int8_static (minmax)": QuantizationConfig(method="int8_static"),
        "hf_compress int8_static + SmoothQuant (pct 99.99)": QuantizationConfig(
            method="int8_static", smoothquant_alpha=0.5, observer="percentile"
        ),
        "hf_compress int8_weight_only": QuantizationConfig(method="int8_weight_only"),
        "hf_compress int4_weight_only (g64)": QuantizationConfig(method="int4_weight_only", group_size=64),
    }


def _torch_ao_dynamic(model, _calibration):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


PEERS = {  # name -> (fp32 copy, calibration batches) -> quantized model
    "torch.ao quantize_dynamic (peer)": _torch_ao_dynamic,
    "torchao int8 weight-only (peer)": lambda model, _calibration: peers.torchao_int8_weight_only(model),
    "optimum-quanto int8 weights (peer)": lambda model, _calibration: peers.quanto_int8(model),
    "optimum-quanto int8 W8A8 (peer)": peers.quanto_int8,
}
COLUMN_EXTRA = [
    ("acc_delta", "acc delta (pts)"),
    ("fidelity_mean", "fidelity mean"),
    ("fidelity_min", "fidelity min"),
]


def fidelity(reference, model, batches) -> tuple[float, float]:
    """Cosine of mean-pooled last hidden states vs the float model (mean, min over sentences / images)."""
    cos = []
    with torch.inference_mode():
        for batch in batches:
            pooled = []
            for m in (reference, model):
                hidden = m(**batch, output_hidden_states=True).hidden_states[-1].float()
                mask = batch.get("attention_mask", torch.ones(hidden.shape[:2], dtype=torch.long)).unsqueeze(-1)
                pooled.append((hidden * mask).sum(1) / mask.sum(1))
            cos.append(torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=1))
    values = torch.cat(cos)
    return float(values.mean()), float(values.min())


def kernel_ceiling(reps: int = 20) -> list[dict]:
    """fp32 F.linear vs fbgemm int8 (dynamic and static activations) on MiniLM's shapes at batch 8 x 128."""
    from hf_compress.quant.modules import Int8DynamicLinear, Int8StaticLinear

    rows = []
    for k, n in [(384, 384), (384, 1536), (1536, 384)]:
        linear = torch.nn.Linear(k, n)
        x = torch.randn(1024, k)
        dynamic = Int8DynamicLinear.from_float(linear)
        static = Int8StaticLinear.from_float(linear)
        static.set_input_range(float(x.min()), float(x.max()))
        timings = {"fp32": [], "int8 dynamic": [], "int8 static": []}
        with torch.inference_mode():
            for _ in range(3):
                linear(x), dynamic(x), static(x)
            for _ in range(reps):
                for name, module in (("fp32", linear), ("int8 dynamic", dynamic), ("int8 static", static)):
                    start = time.perf_counter()
                    module(x)
                    timings[name].append(time.perf_counter() - start)
        fp32 = statistics.median(timings["fp32"])
        rows.append(
            {
                "shape": f"1024x{k} @ {k}x{n}",
                "fp32_ms": fp32 * 1000,
                "dynamic_ratio": statistics.median(timings["int8 dynamic"]) / fp32,
                "static_ratio": statistics.median(timings["int8 static"]) / fp32,
            }
        )
    return rows


def _data(kind: str, quick: bool):
    """(fp32 model, test set, collator, calibration rows, fidelity batches) of one half."""
    if kind == "text":
        teacher_path = common.text_teacher()
        tokenizer = AutoTokenizer.from_pretrained(teacher_path)
        data = common.rt_data(tokenizer)
        collator = DataCollatorWithPadding(tokenizer)
        fp32 = AutoModelForSequenceClassification.from_pretrained(teacher_path)
        test = data["test"].select(range(200)) if quick else data["test"]
        calibration, held_out = data["train"].select(range(256)), data["validation"].select(range(200))
    else:
        fp32 = AutoModelForImageClassification.from_pretrained(common.vision_teacher(epochs=2.0, train_limit=20000))
        data = common.fmnist_data(train_limit=20000, test_limit=500 if quick else None)
        collator, test = None, data["test"]
        calibration, held_out = data["train"].select(range(256)), data["train"].select(range(20000 - 200, 20000))

    def batches(rows, size):
        out = []
        for start in range(0, len(rows), size):
            chunk = rows.select(range(start, min(start + size, len(rows))))
            batch = collator([chunk[i] for i in range(len(chunk))]) if collator else dict(chunk[:])
            out.append({k: v for k, v in batch.items() if k != "labels"})
        return out

    return fp32.eval(), test, collator, calibration, batches(held_out, 25), batches(calibration, 8)


def run(quick: bool, kind: str) -> dict:
    fp32, test, collator, calibration, fid_batches, calib_batches = _data(kind, quick)
    entries = {}
    for name, config in variants(kind).items():
        start = time.perf_counter()
        model = quantize(copy.deepcopy(fp32), config, calibration, collate_fn=collator)
        entries[name] = {"model": model, "compress_s": time.perf_counter() - start}
    for name, build in PEERS.items():
        try:
            start = time.perf_counter()
            model = build(copy.deepcopy(fp32), calib_batches)
            entries[name] = {"model": model, "compress_s": time.perf_counter() - start}
        except ImportError as err:
            print(f"[quant {kind}] skipping {name}: {err}", flush=True)
    for name, entry in entries.items():
        mean, low = fidelity(fp32, entry["model"], fid_batches)
        entry.update(fidelity_mean=mean, fidelity_min=low, reload=common.reload_check(entry["model"]))
        print(f"[quant {kind}] {name}: fidelity {mean:.5f}, reload {entry['reload']}", flush=True)
    rows = common.measure(fp32, entries, test, collator, reps=5 if quick else 20, teacher_name="fp32")
    rows[0].update(fidelity_mean=1.0, fidelity_min=1.0, reload=common.reload_check(fp32))
    for row in rows:
        row.update(acc_delta=100 * (row["accuracy"] - rows[0]["accuracy"]),
                   size_pct=100 * row["size_mb"] / rows[0]["size_mb"])  # fmt: skip
    result = {"kind": kind, "rows": rows, "fp32_ms": rows[0]["teacher_ms"]}
    if kind == "text":
        result["kernels"] = kernel_ceiling(5 if quick else 20)
    return result


def report(result: dict) -> str:
    kind = result.get("kind", "text")
    teacher = "MiniLM-L6 fine-tuned on Rotten Tomatoes" if kind == "text" else "ViT (6 layers) on Fashion-MNIST"
    lines = [f"### Quantization: {teacher} (latency = ratio to fp32, 2 threads)\n"]
    rows = common.legacy_rows(result["rows"])
    columns = common.columns(vision=kind == "vision", extra=COLUMN_EXTRA, after="accuracy")
    columns = [c for c in columns if c[0] not in ("pct_teacher", "params_m")]
    columns.insert([k for k, _ in columns].index("size_mb") + 1, ("size_pct", "% of fp32 size"))
    columns.append(("reload", "save -> from_pretrained"))
    lines.append(common.markdown_table(rows, columns))
    ref = result["fp32_ms"]
    shapes = ("8 images", "1 image") if kind == "vision" else ("8x128", "1x128")
    lines.append(f"\nfp32 medians: {shapes[0]} {ref['8x128_ms']:.1f} ms, {shapes[1]} {ref['1x128_ms']:.1f} ms.\n")
    if result.get("kernels"):
        lines.append("Int8 kernel ceiling on this CPU (one Linear, median ratio to fp32 F.linear):\n")
        columns = [
            ("shape", "GEMM"),
            ("fp32_ms", "fp32 ms"),
            ("dynamic_ratio", "int8 dynamic"),
            ("static_ratio", "int8 static"),
        ]
        lines.append(common.markdown_table(result["kernels"], columns))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["text", "vision"], help="run one half")
    args = parser.parse_args(argv)
    common.setup()
    for kind in [args.only] if args.only else ["text", "vision"]:
        result = run(args.quick, kind)
        name = "quant" if kind == "text" else "quant-vision"
        path = common.write_json(f"{name}-quick" if args.quick else name, {"suite": "quant", "argv": argv, **result})
        print(report(result))
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
