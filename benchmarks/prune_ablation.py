"""The HomoDistil ablation of the pruning benchmark: HomoDistil at the half-width shape once per variant (each fix /
addition on or off, or another ``importance`` scorer: the product's, or a probe of benchmarks/rankers.py), all at
the same steps, with the share of the kept structures that one-shot magnitude pruning keeps too. Run through
`python -m benchmarks prune --ablation`.
"""

from __future__ import annotations

import copy
import datetime
import json

from hf_compress.models.structure import model_structure
from hf_compress.prune.masks import StructureMasks, keep_top
from hf_compress.prune.scorers.magnitude import MagnitudeScores

from . import common, rankers
from .prune_common import (
    HOMODISTIL_ATTENTION,
    SHAPES,
    _seed_statistics,
    _shape,
    _teacher_and_data,
    _train_homodistil,
    _with_seed_columns,
)

# Ablation variants: HomoDistil at SHAPES[kind] with KD + hidden KD (the suite's base objective), plus one change
# each, all at the same steps. key -> (row label, HomoDistilConfig overrides); "{end}" stands for max_steps,
# "{0.3}" for that fraction of it.
ABLATIONS = {
    "base": ("base: KD + hidden KD", {}),
    "attention": ("+ attention KD (kl, kept heads)", dict(attention_weight=1.0)),
    "attention_all_heads": (
        "+ attention KD over all heads (fix 1 off)",
        dict(attention_weight=1.0, attention_kd_kept_heads=False),
    ),
    "attention_scores": (
        "+ attention KD on pre-softmax scores (TinyBERT)",
        dict(attention_weight=1.0, attention_loss_type="mse_scores"),
    ),
    "label_signal": ("+ label loss while pruning (importance_label_weight=1)", dict(importance_label_weight=1.0)),
    "labels": ("+ label loss throughout (hard_label_weight=1)", dict(hard_label_weight=1.0)),
    "window": ("+ PLATON window deltaT=10", dict(importance_window=10)),
    "no_recovery": ("no recovery phase (targets reached at the last step)", dict(prune_end_step="{end}")),
    "early_end": (
        "+ attention KD, targets reached at 30 % of the steps (longer recovery)",
        dict(attention_weight=1.0, prune_end_step="{0.3}"),
    ),
    "structure": (
        "+ attention KD, structure-level scores (HomoDistil's abs(sum of w * grad) per structure)",
        dict(attention_weight=1.0, importance_granularity="structure"),
    ),
    "magnitude": (
        "+ attention KD, magnitude scores on the cubic schedule",
        dict(attention_weight=1.0, importance="magnitude"),
    ),
    "magnitude_early": (
        "+ attention KD, magnitude scores, targets reached at 30 % of the steps",
        dict(attention_weight=1.0, importance="magnitude", prune_end_step="{0.3}"),
    ),
    "fisher": (
        "+ attention KD, ranked by Fisher information at each event (importance='fisher')",
        dict(HOMODISTIL_ATTENTION, importance="fisher"),
    ),
    "activation": (
        "+ attention KD, ranked by activation x weight norms (Wanda; importance='activation')",
        dict(HOMODISTIL_ATTENTION, importance="activation"),
    ),
    "magnitude_hidden": (
        "+ attention KD, PLATON for heads / FFN, magnitude for hidden channels",
        dict(HOMODISTIL_ATTENTION, importance="magnitude_hidden"),  # registered by benchmarks/rankers.py
    ),
    "magnitude_heads_ffn": (
        "+ attention KD, PLATON for hidden channels, magnitude for heads / FFN",
        dict(HOMODISTIL_ATTENTION, importance="magnitude_heads_ffn"),
    ),
    "random": (
        "+ attention KD, a random kept set (control: seeded random scores, same order at every event)",
        dict(HOMODISTIL_ATTENTION, importance="random"),
    ),
    "depth": ("+ depth: 4 of 6 layers as well (smaller, so faster: not the same shape)", dict(target_num_layers=4)),
    "all": (
        "all additions: attention KD + label signal + deltaT=10",
        dict(attention_weight=1.0, importance_label_weight=1.0, importance_window=10),
    ),
}


def magnitude_masks(teacher, settings: dict) -> StructureMasks:
    """The masks one-shot magnitude pruning of ``teacher`` keeps at ``settings``' widths (the one-shot row's)."""
    model = copy.deepcopy(teacher).requires_grad_(True)
    structure = model_structure(model)
    scores = MagnitudeScores(model).structure_scores(structure)
    masks = StructureMasks.full(structure)
    targets = {"hidden": "target_hidden_size", "heads": "target_num_heads", "ffn": "target_intermediate_size"}
    for kind, name in targets.items():
        if settings.get(name):
            getattr(masks, kind).copy_(keep_top(scores[kind], getattr(masks, kind), settings[name]))
    return masks


def ablation_settings(key: str, steps: int, kind: str) -> dict:
    """The HomoDistilConfig pruning fields of one ablation variant (shape, schedule and the variant's change)."""
    if key not in ABLATIONS:
        raise SystemExit(f"Unknown ablation variant {key!r}; choose from {sorted(ABLATIONS)}.")
    end = max(2, int(0.6 * steps))
    settings = dict(SHAPES[kind], prune_start_step=0, prune_end_step=end, prune_every=max(1, end // 20))
    for name, value in ABLATIONS[key][1].items():
        if isinstance(value, str) and value.startswith("{"):
            value = steps if value == "{end}" else max(1, int(float(value[1:-1]) * steps))
        settings[name] = value
    if "prune_end_step" in ABLATIONS[key][1]:
        settings["prune_every"] = max(1, settings["prune_end_step"] // 20)
    return settings


def ablation(quick: bool, steps: int, kind: str, variants: list[str], seeds: tuple[int, ...] = (0,)) -> dict:
    """HomoDistil at SHAPES[kind] once per variant (and seed), all at ``steps``: test accuracy, % of the teacher,
    wall time. Every variant but ``depth`` ends at the same shape, so latency is the same and not measured. With
    several seeds a row holds the first seed's accuracy and wall time, and the accuracy per seed, mean and sd."""
    for key in variants:
        ablation_settings(key, steps, kind)  # unknown names fail before any training
    shape = SHAPES[kind]
    teacher, train_set, test, collator = _teacher_and_data(kind, quick)
    steps = 4 if quick else steps
    end = max(2, int(0.6 * steps))
    teacher_acc = common.evaluate_accuracy(teacher, test, collator)
    rows = [dict(model="teacher", variant="", accuracy=teacher_acc, pct_teacher=100.0, steps=0, compress_s=0.0)]
    reference = magnitude_masks(teacher, shape)  # what one-shot magnitude pruning keeps, to compare kept sets
    for key in variants:
        label, settings = ABLATIONS[key][0], ablation_settings(key, steps, kind)
        for seed in seeds:
            model, seconds, masks = _train_homodistil(teacher, train_set, collator, kind, steps, settings, seed)
            acc = common.evaluate_accuracy(model, test, collator)
            print(f"[prune ablation {kind}] {label} (seed {seed}): acc {acc:.4f} ({100 * acc / teacher_acc:.1f} %), "
                  f"{seconds:.0f}s", flush=True)  # fmt: skip
            if seed != seeds[0]:
                rows[-1]["seed_accuracies"].append(acc)
                continue
            overlap = rankers.kept_overlap(masks, reference) if masks.counts()["layers"] == len(masks.layers) else {}
            rows.append(dict(model=label, variant=key, accuracy=acc, pct_teacher=100 * acc / teacher_acc,
                             steps=steps, compress_s=seconds, shape=_shape(model), seed_accuracies=[],
                             kept_overlap=overlap))  # fmt: skip
        _seed_statistics(rows[-1])
        if "mean_accuracy" in rows[-1]:
            rows[-1]["pct_teacher"] = 100 * rows[-1]["mean_accuracy"] / teacher_acc
    return {"kind": kind, "ablation": True, "rows": rows, "steps": steps, "prune_end_step": end, "shape": shape,
            "seeds": list(seeds)}  # fmt: skip


def merge_ablation(name: str, result: dict, argv) -> tuple[dict, list]:
    """The newest ablation JSON ``name`` (today's or an earlier day's) with ``result``'s variant rows added (a
    re-run variant replaces its row), each row marked with the day it was measured; refuses tables of other steps
    or shapes, whose rows would not be comparable."""
    today = datetime.date.today().isoformat()
    tables = [day / f"{name}.json" for day in common.day_folders(until=today) if (day / f"{name}.json").is_file()]
    for row in result["rows"][1:]:
        row.setdefault("measured", today)
    if not tables:
        return result, [argv]
    path = tables[-1]
    old = json.loads(path.read_text())
    for row in old["rows"][1:]:
        row.setdefault("measured", path.parent.name)
    if (old["steps"], old["shape"], old["kind"]) != (result["steps"], result["shape"], result["kind"]):
        raise SystemExit(f"{path} was measured at other steps / shape; run without --append to replace it.")
    new = {row["variant"]: row for row in result["rows"][1:]}
    rows = [row for row in old["rows"] if row["variant"] not in new] + list(new.values())
    return {**result, "rows": rows}, old.get("commands", [old.get("argv")]) + [argv]


def ablation_report(result: dict) -> str:
    kind, shape = result["kind"], result["shape"]
    head = (
        f"### Ablation ({kind}): HomoDistil to hidden {shape['target_hidden_size']} / {shape['target_num_heads']} "
        f"heads / FFN {shape['target_intermediate_size']}, {result['steps']} steps per variant (targets reached at "
        f"step {result['prune_end_step']} unless the variant says otherwise); one shape (but 'depth'), one latency\n"
    )
    columns = [("model", "variant"), ("variant", "key"), ("accuracy", "accuracy"), ("pct_teacher", "% of teacher"),
               ("steps", "steps"), ("compress_s", "wall s")]  # fmt: skip
    rows = result["rows"]
    if any("mean_accuracy" in r for r in rows):
        rows = [_with_seed_columns(r) for r in rows]
        columns[3:3] = [("per_seed", "accuracy per seed"), ("mean_sd", "mean +- sd")]
        head += "(with several seeds: % of teacher is the mean's; accuracy and wall s are the first seed's)\n"
    if len({r["measured"] for r in rows if r.get("measured")}) > 1:  # a table merged over several days (--append)
        columns.append(("measured", "measured"))
        head += "(rows measured on several days: wall s compares only rows of the same day)\n"
    if any(r.get("kept_overlap") for r in rows):
        rows = [{**r, "overlap": overlap_cell(r.get("kept_overlap"))} for r in rows]
        columns.append(("overlap", "kept as one-shot magnitude keeps (hidden / heads / FFN)"))
        head += ("(kept as one-shot magnitude keeps: the share of the final kept structures that one-shot magnitude "
                 "pruning of the teacher keeps too, first seed; 1.00 = the same set)\n")  # fmt: skip
    return "\n".join([head, common.markdown_table(rows, columns)])


def overlap_cell(overlap: dict | None) -> str:
    """A row's ``kept_overlap`` as "hidden / heads / FFN" shares ("" when not measured)."""
    return " / ".join(f"{overlap[k]:.2f}" for k in rankers.KINDS) if overlap else ""
