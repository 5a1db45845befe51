"""Quantization benchmark: every hf_compress method beside torch.ao's quantize_dynamic, on the MiniLM-L6
teacher fine-tuned on Rotten Tomatoes; plus the int8 kernel ceiling of this CPU.

    python -m benchmarks quant            # ~10 min on 2 CPU cores (the teacher is trained first if not cached)
    python -m benchmarks quant --quick    # small test subset, few timing repetitions
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from hf_compress import QuantizationConfig, quantize

from . import common

VARIANTS = {
    "hf_compress int8_dynamic": QuantizationConfig(method="int8_dynamic"),
    "hf_compress int8_dynamic + SmoothQuant 0.5": QuantizationConfig(method="int8_dynamic", smoothquant_alpha=0.5),
    "hf_compress int8_dynamic, FFN-out fp32": QuantizationConfig(
        method="int8_dynamic", keep_fp32=["*.layer.*.output.dense"]
    ),
    "hf_compress int8_static (minmax)": QuantizationConfig(method="int8_static"),
    "hf_compress int8_static + SmoothQuant (pct 99.99)": QuantizationConfig(
        method="int8_static", smoothquant_alpha=0.5, observer="percentile"
    ),
    "hf_compress int8_weight_only": QuantizationConfig(method="int8_weight_only"),
    "hf_compress int4_weight_only (g64)": QuantizationConfig(method="int4_weight_only", group_size=64),
}
COLUMNS = [
    ("model", "method"),
    ("accuracy", "test acc"),
    ("acc_delta", "acc delta (pts)"),
    ("fidelity_mean", "fidelity mean"),
    ("fidelity_min", "fidelity min"),
    ("size_mb", "MB on disk"),
    ("size_pct", "% of fp32 size"),
    ("lat_8x128", "latency 8x128"),
    ("lat_1x128", "latency 1x128"),
    ("reload", "save -> from_pretrained"),
]


def fidelity(reference, model, batches) -> tuple[float, float]:
    """Cosine of mean-pooled last hidden states vs the float model (mean, min over sentences)."""
    cos = []
    with torch.inference_mode():
        for batch in batches:
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = []
            for m in (reference, model):
                hidden = m(**batch, output_hidden_states=True).hidden_states[-1].float()
                pooled.append((hidden * mask).sum(1) / mask.sum(1))
            cos.append(torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=1))
    values = torch.cat(cos)
    return float(values.mean()), float(values.min())


def reload_check(model) -> str:
    """Does the model survive save_pretrained -> from_pretrained (hf_compress imported) with equal outputs?"""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            model.save_pretrained(tmp)
        except Exception as err:  # peers that cannot be saved
            return f"no: save fails ({type(err).__name__})"
        try:
            reloaded = AutoModelForSequenceClassification.from_pretrained(tmp)
        except Exception as err:
            return f"no: load fails ({type(err).__name__})"
        inputs = common.example_inputs(model, 2, 16)
        with torch.inference_mode():
            same = torch.equal(reloaded(**inputs).logits, model(**inputs).logits)
        return "yes, identical" if same else "loads, outputs differ"


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


def run(quick: bool) -> dict:
    teacher_path = common.text_teacher()
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    data = common.rt_data(tokenizer)
    test = data["test"].select(range(200)) if quick else data["test"]
    collator = DataCollatorWithPadding(tokenizer)
    calibration = data["train"].select(range(256))
    fid_rows = data["validation"].select(range(200))
    fid_batches = [collator([fid_rows[i] for i in range(j, j + 25)]) for j in range(0, 200, 25)]
    fid_batches = [{k: v for k, v in b.items() if k != "labels"} for b in fid_batches]

    fp32 = AutoModelForSequenceClassification.from_pretrained(teacher_path).eval()
    fp32_acc = common.evaluate_accuracy(fp32, test, collator)
    fp32_size = common.size_on_disk_mb(fp32)
    models, rows, timings = {}, [], {}
    for name, config in VARIANTS.items():
        start = time.perf_counter()
        models[name] = quantize(copy.deepcopy(fp32), config, calibration, collate_fn=collator)
        timings[name] = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models["torch.ao quantize_dynamic (peer)"] = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8
        )
    latency = common.latency_ratios(fp32, models, reps=5 if quick else 20)
    base = dict(model="fp32", accuracy=fp32_acc, acc_delta=0.0, fidelity_mean=1.0, fidelity_min=1.0)
    rows.append(dict(base, size_mb=fp32_size, size_pct=100.0, lat_8x128=1.0, lat_1x128=1.0, reload=reload_check(fp32)))
    for name, model in models.items():
        acc = common.evaluate_accuracy(model, test, collator)
        mean, low = fidelity(fp32, model, fid_batches)
        try:
            size = common.size_on_disk_mb(model)
        except Exception:  # torch.ao's quantized modules cannot be saved with save_pretrained
            size = float("nan")
        rows.append(
            dict(
                model=name,
                accuracy=acc,
                acc_delta=100 * (acc - fp32_acc),
                fidelity_mean=mean,
                fidelity_min=low,
                size_mb=size,
                size_pct=100 * size / fp32_size,
                lat_8x128=latency[name]["8x128"],
                lat_1x128=latency[name]["1x128"],
                reload=reload_check(model),
                quantize_s=timings.get(name),
            )  # fmt: skip
        )
        print(f"[quant] {name}: acc {acc:.4f} fidelity {mean:.5f} latency {latency[name]['8x128']:.3f}", flush=True)
    return {"rows": rows, "kernels": kernel_ceiling(5 if quick else 20), "fp32_ms": latency["__reference__"]}


def report(result: dict) -> str:
    lines = ["### Quantization: MiniLM-L6 fine-tuned on Rotten Tomatoes (latency = ratio to fp32, 2 threads)\n"]
    lines.append(common.markdown_table(result["rows"], COLUMNS))
    ref = result["fp32_ms"]
    lines.append(f"\nfp32 medians: 8x128 {ref['8x128_ms']:.1f} ms, 1x128 {ref['1x128_ms']:.1f} ms.\n")
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
    args = parser.parse_args(argv)
    common.setup()
    result = run(args.quick)
    path = common.write_json("quant-quick" if args.quick else "quant", {"suite": "quant", "argv": argv, **result})
    print(report(result))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
