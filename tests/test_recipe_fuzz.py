"""Seeded random mutations of a valid tiny recipe (drop / rename keys, swap types, out-of-range numbers, odd
names including path traversal) through `hf-compress run --dry-run`, in process: never a traceback or an
unexpected exit code, never exit 0 with a value that was dropped or a value that must be refused, and never a
file written outside the output folder. A few accepted mutants also run for real."""

import math
import random

import pytest
import yaml
from tiny_assets import DISTILL, FINETUNE, make_assets, tiny_recipe

from hf_compress.cli import main as cli_main

SEED = 11
CASES = 150
ODD_NAMES = ["../../victim", "/tmp/victim", "a/b", "..", "", " ", "x" * 80, "na me", "名前", ".hidden", "-x"]
# Values here must be >= 1 (seed >= 0); a mutant that sets them lower must be refused.
POSITIVE = {"train_limit", "eval_limit", "test_limit", "max_length", "calibration_samples", "latency_repeats",
            "per_device_train_batch_size", "gradient_accumulation_steps"}  # fmt: skip


def base_recipe(assets):
    homodistil = {"name": "homodistil", "method": "homodistil", "target_intermediate_size": 32, "prune_end_step": 2,
                  "prune_every": 1, "max_steps": 3, "use_cpu": True}  # fmt: skip
    quantize = {"name": "int8", "method": "quantize", "quant_method": "int8_dynamic", "calibration_samples": 8}
    raw = tiny_recipe(assets, dict(FINETUNE), dict(DISTILL), homodistil, quantize, {"method": "evaluate"})
    raw.update(seed=3)
    raw["data"].update(train_limit=40, eval_limit=8, test_limit=8)
    return raw


def leaves(value, path=()):
    """Every (path, value) in a nested dict / list, containers included."""
    yield path, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from leaves(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from leaves(child, (*path, index))


def get(raw, path):
    for key in path:
        raw = raw[key]
    return raw


def swap_type(value, rng):
    options = ["text", 7, -2.5, True, None, [1, "a"], {"k": 1}]
    return rng.choice([o for o in options if type(o) is not type(value)])


def mutate(raw, rng):
    """Apply one random mutation; returns (kind, path, new value or None, must_fail)."""
    paths = [
        p for p, _ in leaves(raw) if p and not (len(p) >= 2 and p[0] == "data" and p[1] == "files" and len(p) > 2)
    ]
    path = rng.choice(paths)
    parent, key = get(raw, path[:-1]), path[-1]
    kind = rng.choice(["drop", "rename", "type", "number", "name"])
    if kind == "name" or (kind == "number" and not isinstance(parent[key], (int, float))):
        kind = "name"
        path = rng.choice([("name",), ("stages", rng.randrange(len(raw["stages"])), "name"), ("teacher", "source")])
        parent, key = get(raw, path[:-1]), path[-1]
        value = rng.choice(ODD_NAMES)
        parent[key] = value
        must_fail = path[-1] == "name" and ("/" in value or ".." in value or value.strip() != value or not value)
        return kind, path, value, must_fail
    if isinstance(parent, list):  # lists: drop / swap an element
        if kind in ("drop", "rename"):
            parent.pop(key)
            return "drop", path, None, False
        kind = "type"
    if kind == "drop":
        del parent[key]
        return kind, path, None, False
    if kind == "rename":
        parent[f"{key}_x"] = parent.pop(key)
        return kind, path, None, isinstance(key, str)
    if kind == "type":
        value = swap_type(parent[key], rng)
        parent[key] = value
        return kind, path, value, False
    value = rng.choice([0, -1, -(10**9), 10**12, 0.5, float("inf"), float("nan")])
    parent[key] = value
    must_fail = (key in POSITIVE and value < 1) or (key == "seed" and value < 0) or (
        key in POSITIVE | {"seed"} and isinstance(value, float)
    )  # fmt: skip
    return kind, path, value, must_fail


def snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("fuzz-assets"))


def test_random_recipe_mutations_never_crash_never_lie_never_escape(assets, tmp_path, capsys):
    rng = random.Random(SEED)
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("keep")
    outcomes = {0: 0, 2: 0}
    for case in range(CASES):
        raw = base_recipe(assets)
        kind, path, value, must_fail = mutate(raw, rng)
        recipe = work / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(raw, allow_unicode=True))
        before = snapshot(tmp_path)
        code = cli_main(["run", str(recipe), "--dry-run", "--output-dir", str(work / "out")])
        captured = capsys.readouterr()
        label = f"case {case} (seed {SEED}): {kind} {'.'.join(map(str, path))} -> {value!r}"
        assert code in (0, 2), f"{label}: exit {code}\n{captured.err[-2000:]}"
        assert "Traceback" not in captured.err, label
        assert snapshot(tmp_path) == before, f"{label}: files changed"
        outcomes[code] += 1
        if code == 2:
            assert captured.err.strip().startswith("hf-compress: error:"), label
            continue
        assert not must_fail, f"{label}: accepted a value that must be refused"
        resolved = yaml.safe_load(captured.out[captured.out.index("name:") :])
        if value is not None and kind != "drop" and path[-1] != "name":
            shown = get(resolved, path)  # an accepted value is used, not silently dropped
            if not (isinstance(value, float) and math.isnan(value)):
                assert shown == value or (path[0] == "teacher" and path[-1] == "source"), f"{label}: got {shown!r}"
    assert min(outcomes.values()) > 10, outcomes  # the fuzzer reaches both outcomes
    assert (tmp_path / "victim" / "keep.txt").read_text() == "keep"


def test_a_few_accepted_mutants_run_for_real(assets, tmp_path, capsys):
    """Quantize-only mutants (no training: seconds each) run end to end: exit 0 or 2, nothing outside."""
    rng = random.Random(SEED)
    (tmp_path / "victim").mkdir()
    ran = 0
    for case in range(40):
        raw = tiny_recipe(assets, {"name": "int8", "method": "quantize", "calibration_samples": 8})
        raw["data"].update(train_limit=16, test_limit=8)
        kind, path, value, _ = mutate(raw, rng)
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(raw, allow_unicode=True))
        if cli_main(["run", str(recipe), "--dry-run"]) != 0:
            capsys.readouterr()
            continue
        out = tmp_path / f"out{case}"
        code = cli_main(["run", str(recipe), "--output-dir", str(out)])
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err, f"case {case}: {kind} {path} -> {value!r}: {err[-2000:]}"
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("out")) == ["recipe.yaml", "victim"]
        assert not list((tmp_path / "victim").iterdir())
        ran += 1
        if ran == 3:
            break
    assert ran == 3
