"""Every performance target of the open issues, judged against the newest results: met, or missed by how much.

Used by `benchmarks.report` for the "Targets" section of RESULTS.md. Each function takes the newest results of
every suite (``{json stem: payload}``) and returns markdown lines; a suite that was not run says so instead.
"""

from __future__ import annotations

from .prune import FRONTIER_TARGET, frontier_verdicts
from .prune_ablation import overlap_cell


def _verdict(met: bool) -> str:
    return "**met**" if met else "**NOT met**"


def retention(results: dict[str, dict]) -> list[str]:
    """The retention target: text frontier (>= 97 % at >= 3x / 2.5x within 3 epochs, + int8 >= 4x); vision:
    HomoDistil above truncated + KD and one-shot + KD at the same shape and steps."""
    lines = ["### Retention (text: >= 97 % of the teacher at >= 3x (8x128) and >= 2.5x (1x128) within 3 epochs; "
             f"pruned + int8 >= {FRONTIER_TARGET['int8_speedup_8x128']:.0f}x at >= 97 %)\n"]  # fmt: skip
    frontier = results.get("prune-frontier")
    lines += (
        frontier_verdicts(frontier) if frontier else ["- not measured: run `python -m benchmarks prune --frontier`"]
    )
    if frontier and results.get("prune-frontier-seeds"):
        lines += frontier_seed_verdicts(frontier, results["prune-frontier-seeds"])
    line, others = _vision_verdict(results.get("prune-vision", {}))
    if line is None:
        lines.append("- vision: not measured (`python -m benchmarks prune --only vision`)")
        return lines
    lines.append(f"- vision: {line}")
    labels = _vision_verdict(results.get("prune-vision-labels", {}))[0]  # the label loss added to every row
    if labels:
        lines.append(f"- vision (+ label loss for every row): {labels}")
    ablation = [r for r in results.get("prune-ablation-vision", {}).get("rows", []) if r.get("variant")]
    tried = [r for r in ablation if r["variant"] not in CONTROLS]
    if tried:
        accuracy = {r["variant"]: _mean(r) for r in tried}
        best = max(accuracy, key=accuracy.get)
        low, gap = min(accuracy.values()), 100 * (accuracy[best] - max(others.values()))
        spread = next((f", sd {100 * r['sd_accuracy']:.2f} points over {len(r['seed_accuracies'])} seeds"
                       for r in tried if r["variant"] == best and "sd_accuracy" in r), "")  # fmt: skip
        lines.append(f"- vision, what was tried (ablation table above, same steps): {len(tried)} HomoDistil variants "
                     f"at {low:.4f}-{accuracy[best]:.4f}; the best ({best}{spread}) is {gap:+.2f} points from the "
                     "best other method")  # fmt: skip
        one_shot = others.get("one-shot magnitude prune + KD")
        if "magnitude" in accuracy and one_shot is not None:  # same schedule, other ranking: which one loses
            rows = {r["variant"]: r for r in ablation}
            controls = {k: _mean(r) for k, r in rows.items() if k in CONTROLS}
            lines.append(_where_the_gap_is({**accuracy, **controls}, one_shot, rows))
    return lines


def _mean(row: dict) -> float:
    """A row's accuracy: the mean over its seeds where it was trained at several, else its one run's."""
    return row.get("mean_accuracy", row["accuracy"])


# Ablation rows that are controls, not HomoDistil variants a user could pick: left out of "what was tried".
CONTROLS = ("random",)


def frontier_seed_verdicts(table: dict, check: dict) -> list[str]:
    """The frontier table's models (seed 0) with the accuracies of a seed check at other seeds (``prune --frontier
    --seeds 1,2 --frontier-shape ...``), judged on the mean over all of them: the same shape, so the table's speed-ups
    hold; only the share of the teacher can change."""
    base = table.get("seeds", [0])  # the frontier table: seed 0 unless it says otherwise
    seeds = [s for s in check.get("seeds", []) if s not in base]
    rows = {r["model"]: r for r in table["rows"]}
    teacher = rows["teacher"]["accuracy"]
    lines = []
    for row in check["rows"]:
        main = rows.get(row["model"])
        if row["model"] == "teacher" or main is None or not seeds:
            continue
        other = dict(zip(check["seeds"], row.get("seed_accuracies") or [row["accuracy"]]))
        accuracies = [main["accuracy"], *(other[s] for s in seeds)]
        pct = 100 * sum(accuracies) / len(accuracies) / teacher
        shown = " / ".join(f"{a:.4f}" for a in accuracies)
        met = pct >= FRONTIER_TARGET["pct_teacher"]
        lines.append(f"- {row['model']} at seeds {', '.join(map(str, base + seeds))}: {shown}, "
                     f"mean {pct:.1f} % of the teacher (lowest seed {100 * min(accuracies) / teacher:.1f} %): "
                     f"{_verdict(met)} on the mean (target >= "
                     f"{FRONTIER_TARGET['pct_teacher']:.0f} %; same shape, so the speed-ups above hold)")  # fmt: skip
    return lines


# Rankings of the vision ablation that use the loss or the activations, and their names in the targets line.
AWARE_RANKINGS = {
    "attention": "PLATON",
    "structure": "structure-level PLATON",
    "fisher": "Fisher",
    "activation": "activation x weight",
}


def _where_the_gap_is(accuracy: dict[str, float], one_shot: float, rows: dict[str, dict]) -> str:
    """The gradual schedule ranked by magnitude vs by loss- or activation-aware scores, and how much of what each
    keeps one-shot magnitude pruning keeps too (where measured). Claims only what the rows show: "below" needs a
    lower mean and, where both rows ran at the same seeds, a lower accuracy at every seed; "ties" needs the kept
    sets to overlap by >= 80 % and the means to be within TIE_POINTS."""

    def overlap(variant: str) -> str:
        cell = overlap_cell(rows.get(variant, {}).get("kept_overlap"))
        return f"; keeps {cell}" if cell else ""

    magnitude = accuracy["magnitude"]
    aware = [(key, name, accuracy[key], overlap(key)) for key, name in AWARE_RANKINGS.items() if key in accuracy]
    text = (f"- vision, where the gap is: the same gradual schedule ranked by magnitude reaches {magnitude:.4f} "
            f"({100 * (magnitude - one_shot):+.2f} points from one-shot magnitude pruning"
            f"{overlap('magnitude')})")  # fmt: skip
    if aware:
        text += ", ranked by the loss or the activations " + ", ".join(
            f"{v:.4f} ({name}{kept})" for _, name, v, kept in aware
        )
    if any(kept for *_, kept in aware) or overlap("magnitude"):
        text += (" (keeps: the share of the kept hidden channels / heads / FFN neurons that one-shot magnitude "
                 "pruning keeps too, first seed)")  # fmt: skip
    paired = [_below_at_every_seed(rows.get(key, {}), rows.get("magnitude", {})) for key, *_ in aware]
    if aware and all(v < magnitude for _, _, v, _ in aware) and all(p is not False for p in paired):
        seeds = [len(rows[key]["seed_accuracies"]) for (key, *_), p in zip(aware, paired) if p]
        text += ": every loss- or activation-aware ranking ends below magnitude"
        if seeds:
            counts = str(min(seeds)) if min(seeds) == max(seeds) else f"{min(seeds)}-{max(seeds)}"
            others = ", the others in one run" if len(seeds) < len(aware) else ""
            text += f" ({len(seeds)} of {len(aware)} at each of their {counts} seeds{others})"
        kept = rows.get("magnitude", {}).get("kept_overlap")
        if kept and min(kept.values()) >= 0.8 and abs(100 * (magnitude - one_shot)) <= TIE_POINTS:
            text += (f"; gradual pruning by magnitude keeps {100 * min(kept.values()):.0f}-"
                     f"{100 * max(kept.values()):.0f} % of what one-shot magnitude pruning keeps and ends within "
                     f"{TIE_POINTS} points of it: at this shape and budget the schedule only ties "
                     "one-shot")  # fmt: skip
    if "random" in accuracy:  # what choosing the kept set is worth at all: each ranking against a random set
        rand = accuracy["random"]
        rankings = [("magnitude", magnitude)] + [(name, v) for _, name, v, _ in aware]
        worth = ", ".join(f"{name} {100 * (v - rand):+.2f}" for name, v in rankings)
        text += f"; a random kept set (control{_seeds(rows.get('random', {}))}) reaches {rand:.4f}, so against it: "
        text += f"{worth} points"
    return text


def _seeds(row: dict) -> str:
    """The suffix ', mean of N seeds' for a row run at several seeds, else an empty string."""
    n = len(row.get("seed_accuracies") or [])
    return f", mean of {n} seeds" if n > 1 else ""


TIE_POINTS = 0.3  # accuracy points within which two means count as a tie in the line above


def _below_at_every_seed(row: dict, magnitude: dict) -> bool | None:
    """True / False when both rows ran at the same several seeds (paired by seed); None when they cannot be paired."""
    a, b = row.get("seed_accuracies"), magnitude.get("seed_accuracies")
    if not a or not b or len(a) != len(b):
        return None
    return all(x < y for x, y in zip(a, b))


def _vision_verdict(result: dict) -> tuple[str | None, dict[str, float]]:
    """(verdict line, the other methods' accuracies) of one vision pruning table; (None, {}) without a HomoDistil
    row. With several training seeds the verdict compares means (one seed's half-point differences are within
    seed noise)."""
    vision = {r["model"]: _mean(r) for r in result.get("rows", [])}
    homodistil = vision.get("HomoDistil (PLATON, cubic)")
    if homodistil is None:
        return None, {}
    seeds = result.get("seeds", [0])
    others = {k: vision[k] for k in ("truncated student + KD", "one-shot magnitude prune + KD") if k in vision}
    margins = ", ".join(f"{100 * (homodistil - v):+.2f} points over {k} ({v:.4f})" for k, v in others.items())
    met = all(homodistil > v for v in others.values())
    over = f"mean of {len(seeds)} seeds " if len(seeds) > 1 else ""
    return f"HomoDistil {over}{homodistil:.4f}, {margins}: {_verdict(met)}", others


def rnn(results: dict[str, dict]) -> list[str]:
    """The BiLSTM target: the KD + augmentation BiLSTM >= 10x faster at 1x128, 8x128 and real lengths, >= 93 % of the
    teacher, >= 2 points above labels only; each measured run (hidden size) on its own line."""
    lines = ["### BiLSTM student (>= 10x faster at 1x128, 8x128 and real lengths; >= 93 %; >= 2 points over "
             "labels only)\n"]  # fmt: skip
    runs = {k: v for k, v in results.items() if k.startswith("rnn")}
    if not runs:
        return lines + ["- not measured: run `python -m benchmarks rnn`"]
    for name, payload in sorted(runs.items()):
        result = payload["text"]
        rows = {r["model"]: r for r in result["rows"]}
        hidden = result.get("student", {}).get("hidden_size", 150)
        for model in ("BiLSTM: KD + augmentation", "BiLSTM: KD + augmentation, ONNX Runtime fp32"):
            row = rows.get(model)
            if row is None:
                continue
            # ORT rows face the faster of the torch and ORT teachers at each shape
            key = "fastest_teacher" if "fastest_teacher_8x128" in row else "lat"
            speeds = {k: 1 / row[f"{key}_{k}"] for k in ("8x128", "1x128", "real_32x", "real_1x")}
            gain = 100 * (row["accuracy"] - rows["BiLSTM: labels only"]["accuracy"])
            met = min(speeds.values()) >= 10 and row["pct_teacher"] >= 93 and gain >= 2
            shown = ", ".join(f"{v:.1f}x at {k.replace('real_', 'real lengths ')}" for k, v in speeds.items())
            lines.append(f"- {name} ({hidden} units), {model}: {row['pct_teacher']:.1f} % of the teacher, "
                         f"{gain:+.1f} points over labels only; {shown}: {_verdict(met)}")  # fmt: skip
    return lines


def onnx(results: dict[str, dict]) -> list[str]:
    """The ONNX target: pruned + int8 on ORT >= 5x at 8x128 and 1x128; our int8 at least as fast as ORT's own
    quantize_dynamic at equal or better fidelity."""
    lines = ["### ONNX Runtime (pruned + int8 on ORT >= 5x at 8x128 and 1x128; our int8 >= ORT quantize_dynamic)\n"]
    runs = {k: v for k, v in results.items() if k.startswith("onnx")}
    if not runs:
        return lines + ["- not measured: run `python -m benchmarks onnx`"]
    for name, payload in sorted(runs.items()):
        rows = {r["model"]: r for r in payload["rows"]}
        pruned = [r for k, r in rows.items() if k.startswith("ORT int8 HomoDistil")]
        best = max(pruned, key=lambda r: min(r["speedup_8x128"], r["speedup_1x128"]))
        met = best["speedup_8x128"] >= 5 and best["speedup_1x128"] >= 5
        pct = 100 * best["accuracy"] / rows["torch fp32 teacher"]["accuracy"]
        lines.append(f"- {name} ({payload['homodistil']}): {best['model']}: {best['speedup_8x128']:.2f}x / "
                     f"{best['speedup_1x128']:.2f}x, {pct:.1f} % of the teacher: {_verdict(met)}")  # fmt: skip
        ours = rows.get("ORT int8 teacher (hf_compress int8_dynamic, ORT 8-bit activations)")
        for peer_name, peer in rows.items():
            if "(peer)" not in peer_name or ours is None:
                continue
            met = ours["lat_8x128"] <= peer["lat_8x128"] * 1.02 and ours["lat_1x128"] <= peer["lat_1x128"] * 1.02
            met = met and ours["agree_teacher"] >= peer["agree_teacher"]
            lines.append(f"- {name}: our int8 on ORT {ours['lat_8x128']:.3f} / {ours['lat_1x128']:.3f} of the "
                         f"teacher's time, agreement {ours['agree_teacher']:.3f}; {peer_name} "
                         f"{peer['lat_8x128']:.3f} / {peer['lat_1x128']:.3f}, agreement {peer['agree_teacher']:.3f} "
                         f"(within 2 % counts as equal): {_verdict(met)}")  # fmt: skip
    return lines


def section(results: dict[str, dict]) -> str:
    parts = ["## Targets of the open issues\n", *retention(results), "", *rnn(results), "", *onnx(results)]
    return "\n".join(parts) + "\n"
