"""Build benchmarks/RESULTS.md and the PNG plots from the newest JSON results of every suite.

python -m benchmarks report [--results-dir benchmarks/results/DATE] [--output benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from . import common

COMMANDS = {
    "distill-text": "python -m benchmarks distill --only text",
    "distill-vision": "python -m benchmarks distill --only vision",
    "distill": "python -m benchmarks distill",
    "prune": "python -m benchmarks prune --only text",
    "prune-vision": "python -m benchmarks prune --only vision",
    "quant": "python -m benchmarks quant --only text",
    "quant-vision": "python -m benchmarks quant --only vision",
    "rnn": "python -m benchmarks rnn",
}


def latest_results(root: Path = common.RESULTS) -> Path:
    days = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not days:
        raise FileNotFoundError(f"No benchmark results under {root}; run a suite first (python -m benchmarks ...).")
    return days[-1]


def pareto_points(results: dict[str, dict]) -> list[dict]:
    """(suite, modality, name, accuracy, latency ratio at batch 8, size MB) of every row that has them."""
    points = []
    for suite, payload in results.items():
        if "text" in payload or "vision" in payload:  # the distillation suite holds both halves
            sections = [("text", payload.get("text")), ("vision", payload.get("vision"))]
        else:
            sections = [(payload.get("kind", "vision" if "vision" in suite else "text"), payload)]
        for modality, section in sections:
            for row in (section or {}).get("rows", []):
                if "accuracy" in row and "lat_8x128" in row:
                    points.append({"suite": suite, "modality": modality, "model": row["model"],
                                   "accuracy": row["accuracy"], "latency": row["lat_8x128"],
                                   "size_mb": row.get("size_mb")})  # fmt: skip
    return points


def plot(points: list[dict], out_dir: Path) -> list[Path]:
    """Per modality: accuracy vs latency (Pareto chart) and size per method, as PNG (text: pareto.png, size.png;
    vision: pareto-vision.png, size-vision.png)."""
    paths = []
    for modality in ("text", "vision"):
        chosen = [p for p in points if p.get("modality", "text") == modality]
        if chosen:
            paths += _plot(chosen, out_dir, "" if modality == "text" else "-vision", modality)
    return paths


def _plot(points: list[dict], out_dir: Path, suffix: str, modality: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(9, 6))
    for suite in sorted({p["suite"] for p in points}):
        chosen = [p for p in points if p["suite"] == suite]
        ax.scatter([p["latency"] for p in chosen], [p["accuracy"] for p in chosen], label=suite, s=40)
        for p in chosen:
            ax.annotate(p["model"][:32], (p["latency"], p["accuracy"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    batch = "8 x 128 tokens" if modality == "text" else "8 images"
    ax.set_xscale("log")  # slow peers (e.g. 15x) would squash everything else against the axis
    ax.set_xlabel(f"latency at {batch}, ratio to the teacher, log scale (lower is faster)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Accuracy vs latency ({modality})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / f"pareto{suffix}.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    sized = [p for p in points if p["size_mb"] is not None and p["size_mb"] == p["size_mb"]]
    fig, ax = plt.subplots(figsize=(9, max(3, 0.3 * len(sized))))
    ax.barh([f"{p['model'][:40]} ({p['suite']})" for p in sized], [p["size_mb"] for p in sized])
    ax.set_xlabel("MB on disk")
    ax.set_title(f"Checkpoint size per method ({modality}; models that cannot be saved are left out)")
    fig.tight_layout()
    paths.append(out_dir / f"size{suffix}.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def shortfalls(results: dict[str, dict]) -> str:
    """The headline target against what was measured, stated plainly, with the reasons taken from the data."""
    lines = ["## Headline target: pruned + int8 >= 5x faster than the teacher at >= 97 % of its accuracy\n"]
    found = False
    for suite, label in (("prune", "Text (MiniLM-L6)"), ("prune-vision", "Vision (ViT)")):
        rows = {r["model"]: r for r in results.get(suite, {}).get("rows", [])}
        best = rows.get("HomoDistil + int8_dynamic")
        if best is None:
            continue
        found = True
        met = best["speedup_8x128"] >= 5 and best["pct_teacher"] >= 97
        lines.append(
            f"- {label}: {best['speedup_8x128']:.2f}x at batch 8 ({1 / best['lat_1x128']:.2f}x at batch 1), "
            f"{best['pct_teacher']:.1f} % of the teacher's accuracy: **{'met' if met else 'NOT met'}**."
        )
    if not found:
        return lines[0] + "\nNo pruned + int8 row was measured in these results.\n"
    kernels = results.get("quant", {}).get("kernels") or []
    best_kernel = min((k["dynamic_ratio"] for k in kernels), default=None)
    lines.append(
        "\nWhy we fall short: half of every width (hidden, heads, FFN) removes about three quarters of the "
        "encoder's matmul work, but embeddings, softmax, LayerNorm and per-call overheads shrink less and dominate "
        "at batch 1"
        + (
            f"; and fbgemm's int8 GEMM is at best {1 / best_kernel:.2f}x faster than fp32 on this AVX2 CPU (kernel "
            "ceiling table above), so int8 adds little on top of pruning (on the small ViT, whose GEMMs are tiny, the "
            "per-call quantization of activations makes it slower)"
            if best_kernel
            else ""
        )
        + ". Accuracy is limited by a few hundred training steps on 2 CPU cores; a longer recovery after the "
        "final mask is the next thing to try. Test accuracy at the same steps (the half-width rows share one shape):\n"
    )
    for suite, label in (("prune", "text"), ("prune-vision", "vision")):
        rows = [r for r in results.get(suite, {}).get("rows", []) if "int8" not in r["model"]]
        if rows:
            lines.append(f"- {label}: " + ", ".join(f"{r['model']} {r['accuracy']:.3f}" for r in rows[1:]))
    return "\n".join(lines) + "\n"


def build(results_dir: Path, output: Path) -> str:
    from . import distill, prune, quant

    results = {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json")) if "quick" not in p.stem}
    shown = (
        results_dir.relative_to(common.ROOT.parent) if results_dir.is_relative_to(common.ROOT.parent) else results_dir
    )
    sections = [f"# Benchmark results\n\nMeasured on this project's 2-core CPU machine; results in `{shown}`. "
                "Latency is a ratio to the teacher (or fp32) measured interleaved in one process with 2 threads, "
                "so it is comparable within a table, not across machines.\n"]  # fmt: skip
    for name, payload in results.items():
        argv = payload.get("argv")
        suite = payload.get("suite", name)
        command = (
            f"python -m benchmarks {suite} {shlex.join(argv)}"
            if argv
            else COMMANDS.get(name, f"python -m benchmarks {name}")
        )
        if name.startswith("distill"):
            body = distill.report(payload.get("text"), payload.get("vision"))
        elif name.startswith("prune"):
            body = prune.report(payload)
        elif name.startswith("quant"):
            body = quant.report(payload)
        elif name.startswith("rnn"):
            from . import rnn

            body = rnn.report(payload["text"])
        else:
            continue
        sections.append(f"## {name}\n\nCommand: `{command}`\n\n{body}\n")
    sections.append(shortfalls(results))
    points = pareto_points(results)
    if points:
        for path in plot(points, results_dir):
            sections.append(f"![{path.stem}]({path.relative_to(output.parent)})\n")
    text = "\n".join(sections)
    output.write_text(text)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=common.ROOT / "RESULTS.md")
    args = parser.parse_args(argv)
    text = build(args.results_dir or latest_results(), args.output)
    print(text)


if __name__ == "__main__":
    main()
