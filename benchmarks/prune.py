"""Pruning benchmark: HomoDistil vs one-shot pruning + KD vs a truncated student + KD vs Torch-Pruning + KD (the
peer), at the same final shape (half of every width) and the same number of training steps; HomoDistil also at
three quarters of every width; plus pruned + int8.

    python -m benchmarks prune                  # text (MiniLM-L6, ~35 min) and vision (Fashion-MNIST ViT, ~15 min)
    python -m benchmarks prune --only vision    # one half
    python -m benchmarks prune --quick          # a few steps on small subsets (plumbing check)
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

from transformers import (
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
)

from hf_compress import (
    DistillationConfig,
    DistillationTrainer,
    HomoDistilConfig,
    HomoDistilTrainer,
    QuantizationConfig,
    quantize,
    slice_model,
)
from hf_compress.models.structure import model_structure
from hf_compress.prune.masks import StructureMasks

from . import common, peers

# Half of every width: hidden, heads and FFN (Torch-Pruning is driven by one ratio, so the peer gets the same).
SHAPES = {
    "text": dict(target_hidden_size=192, target_num_heads=6, target_intermediate_size=768),
    "vision": dict(target_hidden_size=64, target_num_heads=2, target_intermediate_size=256),
}
# A second, wider HomoDistil target (three quarters of every width), for the size / accuracy trade-off.
WIDER = {
    "text": dict(target_hidden_size=288, target_num_heads=9, target_intermediate_size=1152),
    "vision": dict(target_hidden_size=96, target_num_heads=3, target_intermediate_size=384),
}
TRAINING = {  # per half: batch size and learning rate (same for every variant)
    "text": dict(per_device_train_batch_size=32, learning_rate=1e-4),
    "vision": dict(per_device_train_batch_size=64, learning_rate=3e-4),
}
HOMODISTIL = "HomoDistil (PLATON, cubic)"
PEER = "Torch-Pruning (L2 magnitude) + KD (peer)"
HOMODISTIL_CACHE = common.CACHE / "homodistil-minilm-rt"  # the text HomoDistil model, reused by benchmarks/onnx.py


def _shape(model) -> str:
    hidden, heads, ffn = peers.structure_of(model)
    return f"{hidden} / {heads} / {ffn}"


def truncated_student(teacher, shape: dict):
    """The teacher sliced to the target shape keeping the *first* channels / heads / neurons (no scores)."""
    masks = StructureMasks.full(model_structure(teacher))
    masks.hidden[shape["target_hidden_size"] :] = 0
    masks.heads[:, shape["target_num_heads"] :] = 0
    masks.ffn[:, shape["target_intermediate_size"] :] = 0
    return slice_model(teacher, masks)


def torch_pruning_student(teacher, shape: dict, example: dict) -> tuple[object, str]:
    """Torch-Pruning at our shape; returns the model (config edited to its real widths so our trainer can build
    its projections) and what ``from_pretrained`` made of the model exactly as Torch-Pruning handed it back."""
    ratio = 1 - shape["target_hidden_size"] / teacher.config.hidden_size
    model = peers.torch_pruning_prune(copy.deepcopy(teacher), example, ratio)
    hidden, heads, ffn = peers.structure_of(model)
    expected = (shape["target_hidden_size"], shape["target_num_heads"], shape["target_intermediate_size"])
    if (hidden, heads, ffn) != expected:
        raise RuntimeError(f"Torch-Pruning reached {(hidden, heads, ffn)}, not the benchmark shape {expected}.")
    reload = common.reload_check(model)
    model.config.update({"hidden_size": hidden, "num_attention_heads": heads, "intermediate_size": ffn})
    after_edit = common.reload_check(model)
    return model, f"as handed back: {reload}; after editing config.json by hand: {after_edit}"


def run(quick: bool, steps: int, kind: str, wider: bool = True) -> dict:
    shape = SHAPES[kind]
    if kind == "text":
        teacher_path = common.text_teacher()
        tokenizer = AutoTokenizer.from_pretrained(teacher_path)
        data = common.rt_data(tokenizer, train_limit=256 if quick else None)
        train_set, test = data["train"], data["test"].select(range(128)) if quick else data["test"]
        collator = DataCollatorWithPadding(tokenizer)
        teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path).eval()
    else:
        teacher_path = common.vision_teacher(epochs=2.0, train_limit=20000)
        data = common.fmnist_data(train_limit=256 if quick else 20000, test_limit=256 if quick else None)
        train_set, test, collator = data["train"], data["test"], None
        teacher = AutoModelForImageClassification.from_pretrained(teacher_path).eval()
    steps = 4 if quick else steps
    end = max(2, int(0.6 * steps))
    entries = {}

    def make(trainer_cls, config_cls, model=None, **extra):
        kwargs = common.train_kwargs(tempfile.mkdtemp(), max_steps=steps, warmup_steps=20, temperature=2.0,
                                     kd_weight=1.0, hidden_weight=1.0, **TRAINING[kind])  # fmt: skip
        return trainer_cls(model=model, teacher_model=teacher, args=config_cls(**kwargs, **extra),
                           train_dataset=train_set, data_collator=collator)  # fmt: skip

    def train(name, trainer, extra_seconds=0.0):
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start + extra_seconds
        model = trainer.sliced_model() if isinstance(trainer, HomoDistilTrainer) else trainer.model
        model.set_attn_implementation("sdpa")
        entries[name] = {"model": model.eval(), "compress_s": seconds, "shape": _shape(model),
                         "reload": common.reload_check(model)}  # fmt: skip
        print(f"[prune {kind}] {name}: {seconds:.0f}s", flush=True)

    every = max(1, end // 20)
    train(HOMODISTIL, make(HomoDistilTrainer, HomoDistilConfig, **shape, prune_start_step=0, prune_end_step=end,
                           prune_every=every))  # fmt: skip
    if kind == "text" and not quick:
        entries[HOMODISTIL]["model"].save_pretrained(HOMODISTIL_CACHE)
    if wider:
        train("HomoDistil, 3/4 width", make(HomoDistilTrainer, HomoDistilConfig, **WIDER[kind], prune_start_step=0,
                                            prune_end_step=end, prune_every=every))  # fmt: skip
    train("one-shot magnitude prune + KD", make(HomoDistilTrainer, HomoDistilConfig, **shape,
                                                pruning_schedule="oneshot", importance="magnitude"))  # fmt: skip
    truncated = truncated_student(teacher, shape)
    train("truncated student + KD", make(DistillationTrainer, DistillationConfig, truncated))
    try:
        start = time.perf_counter()
        pruned, reload = torch_pruning_student(teacher, shape, common.example_inputs(teacher, 2, 16))
        train(PEER, make(DistillationTrainer, DistillationConfig, pruned), time.perf_counter() - start)
        entries[PEER]["reload"] = reload
    except ImportError as err:
        print(f"[prune {kind}] skipping {PEER}: {err}", flush=True)

    start = time.perf_counter()
    int8 = quantize(copy.deepcopy(entries[HOMODISTIL]["model"]), QuantizationConfig(method="int8_dynamic"))
    entries["HomoDistil + int8_dynamic"] = {
        "model": int8,
        "compress_s": entries[HOMODISTIL]["compress_s"] + time.perf_counter() - start,
        "shape": entries[HOMODISTIL]["shape"],
        "reload": common.reload_check(int8),
    }
    rows = common.measure(teacher, entries, test, collator, reps=5 if quick else 20, teacher_name="teacher")
    rows[0].update(shape=_shape(teacher), reload=common.reload_check(teacher))
    return {"kind": kind, "rows": rows, "steps": steps, "prune_end_step": end, "shape": shape}


COLUMN_EXTRA = [("shape", "hidden / heads / FFN")]


def report(result: dict) -> str:
    """Markdown for one prune result (the older text-only JSON has no ``kind``)."""
    kind = result.get("kind", "text")
    shape = result.get("shape", SHAPES["text"])
    teacher = "MiniLM-L6 (Rotten Tomatoes)" if kind == "text" else "ViT, 6 layers (Fashion-MNIST)"
    head = (
        f"### Pruning: {teacher} -> hidden {shape['target_hidden_size']} / {shape['target_num_heads']} heads / "
        f"FFN {shape['target_intermediate_size']}, {result['steps']} steps each (HomoDistil reaches the shape at "
        f"step {result['prune_end_step']})\n"
    )
    rows = common.legacy_rows(result["rows"])
    columns = common.columns(vision=kind == "vision", extra=COLUMN_EXTRA)
    columns.insert([k for k, _ in columns].index("lat_1x128") + 1, ("speedup_8x128", "speed-up (batch 8)"))
    lines = [head, common.markdown_table(rows, columns)]
    reloads = [f"- {r['model']}: {r['reload']}" for r in rows if "reload" in r]
    if reloads:
        lines.append("\n`save_pretrained` -> `AutoModel...from_pretrained`, outputs compared:\n")
        lines += reloads
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=sorted(SHAPES), help="run one half")
    parser.add_argument("--steps", type=int, default=300, help="training steps of every variant (default 300)")
    parser.add_argument("--no-wider", action="store_true", help="leave out the second, 3/4-width HomoDistil row")
    args = parser.parse_args(argv)
    common.setup()
    for kind in [args.only] if args.only else sorted(SHAPES):
        result = run(args.quick, args.steps, kind, wider=not args.no_wider)
        name = f"prune-{kind}" if kind == "vision" else "prune"
        path = common.write_json(f"{name}-quick" if args.quick else name, {"suite": "prune", "argv": argv, **result})
        print(report(result))
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
