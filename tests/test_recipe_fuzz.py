"""Seeded random mutations of a valid tiny recipe (drop / rename keys, swap types, out-of-range numbers, odd
names including path traversal) through `hf-compress run --dry-run`, in process: never a traceback or an
unexpected exit code, never exit 0 with a value that was dropped or a value that must be refused, and never a
file written outside the output folder. A few accepted mutants also run for real."""

import math
import random

import pytest
import yaml
from tiny_assets import DISTILL, FINETUNE, make_assets, tiny_recipe, write_csv

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


# ---- structure: labels, splits, paths and the YAML itself, run for real ----------------------------------------
# Each mutation knows whether a run must refuse it (exit 2) or may succeed (exit 0); a seeded random mix of one or
# two of them runs end to end. "Silent success" is exit 0 where one of them must be refused.


def _rows(path):
    import csv

    with open(path) as handle:
        return list(csv.reader(handle))[1:]


def _index(label):
    """A row's class id, whether an earlier mutation left it an id or renamed it ("neg" / "pos", "a" / "b")."""
    try:
        return int(label)
    except ValueError:
        return int(str(label).strip().lower() in ("pos", "b"))


def _named_teacher(names, label_order=None):
    """A copy of the tiny teacher whose head names its classes ``names`` (in id order), the data's labels as the
    strings "neg" / "pos"."""

    def apply(raw, tmp):
        import json
        import shutil

        folder = tmp / f"teacher-{len(list(tmp.iterdir()))}"
        shutil.copytree(raw["teacher"]["source"], folder)
        config = json.loads((folder / "config.json").read_text())
        config["id2label"] = dict(enumerate(names))
        config["label2id"] = {name: i for i, name in enumerate(names)}
        (folder / "config.json").write_text(json.dumps(config))
        raw["teacher"]["source"] = str(folder)
        if label_order:
            raw["teacher"]["label_order"] = label_order
        for split in ("train", "validation", "test"):
            _relabel(split, lambda r: [[t, ("neg", "pos")[_index(y)]] for t, y in r])(raw, tmp)

    return apply


def _inside_output(what):
    """Put an input (the teacher, the train file) inside the stage folder the run replaces."""

    def apply(raw, tmp):
        import shutil

        stage = tmp / "out" / "00-int8"
        stage.mkdir(parents=True, exist_ok=True)
        if what == "teacher":
            shutil.copytree(raw["teacher"]["source"], stage / "teacher", dirs_exist_ok=True)
            raw["teacher"]["source"] = str(stage / "teacher")
        else:
            raw["data"]["files"]["train"] = str(shutil.copy(raw["data"]["files"]["train"], stage / "train.csv"))

    return apply


def _relabel(split, change):
    def apply(raw, tmp):
        rows = _rows(raw["data"]["files"][split])
        rows = change(rows)
        raw["data"]["files"][split] = str(write_csv(tmp / f"{split}-{len(list(tmp.iterdir()))}.csv", rows))

    return apply


def _set(path, value):
    def apply(raw, tmp):
        target = raw
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(raw, tmp) if callable(value) else value

    return apply


STRUCTURE = {
    # labels
    "empty-label": (_relabel("train", lambda r: [[t, ""] if i == 3 else [t, y] for i, (t, y) in enumerate(r)]), True),
    "labels-1..K": (_relabel("test", lambda r: [[t, _index(y) + 1] for t, y in r]), True),
    "fractional-label": (
        _relabel("validation", lambda r: [[t, 0.5] if i == 0 else [t, y] for i, (t, y) in enumerate(r)]),
        True,
    ),  # fmt: skip
    "one-class": (
        lambda raw, tmp: [
            _relabel(s, lambda r: [[t, 0] for t, _ in r])(raw, tmp) for s in ("train", "validation", "test")
        ],
        True,
    ),  # fmt: skip
    "unseen-name": (
        lambda raw, tmp: [
            _relabel(
                s,
                lambda r, s=s: [
                    [t, ("odd" if s == "test" and i == 0 else ("a", "b")[_index(y)])] for i, (t, y) in enumerate(r)
                ],
            )(raw, tmp)
            for s in ("train", "validation", "test")
        ],
        True,
    ),  # fmt: skip
    "string-labels": (
        lambda raw, tmp: [
            _relabel(s, lambda r: [[t, ("neg", "pos")[_index(y)]] for t, y in r])(raw, tmp)
            for s in ("train", "validation", "test")
        ],
        False,
    ),  # fmt: skip
    # the teacher head's class names against the data's ("neg" / "pos")
    "head-other-names": (_named_teacher(["bad", "good"]), True),
    "head-same-names-other-case-and-order": (_named_teacher(["POS", "Neg"]), False),
    "head-other-names-index-order": (_named_teacher(["bad", "good"], label_order="index"), False),
    "head-repeated-name": (_named_teacher(["pos", "Pos"]), True),
    "empty-text": (_relabel("test", lambda r: [["", y] if i == 1 else [t, y] for i, (t, y) in enumerate(r)]), True),
    # splits
    "test-is-train": (_set(("data", "test_split"), "train"), True),
    "test-file-is-train-file": (_set(("data", "files", "test"), lambda raw, tmp: raw["data"]["files"]["train"]), True),
    "eval-split-unknown": (_set(("data", "eval_split"), "dev"), True),
    "no-test-eval-is-train": (lambda raw, tmp: raw["data"].update(test_split=None, eval_split="train"), True),
    "no-test": (_set(("data", "test_split"), None), False),
    # paths
    "data-file-missing": (_set(("data", "files", "validation"), lambda raw, tmp: str(tmp / "gone.csv")), True),
    "data-file-is-a-folder": (_set(("data", "files", "validation"), lambda raw, tmp: str(tmp)), True),
    "teacher-inside-output": (_inside_output("teacher"), True),
    "train-file-inside-output": (_inside_output("train"), True),
    "teacher-is-a-file": (_set(("teacher", "source"), lambda raw, tmp: raw["data"]["files"]["train"]), True),
    # YAML structure (applied to the text)
    "duplicate-key": ("data:\n  max_length: 8\n", True),
    "alias-bomb": ("".join(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}' if i else 'z'] * 12)}]\n" for i in range(8)), True),
    "recursive-anchor": ("loop: &loop [*loop]\n", True),
    "stages-a-mapping": (lambda raw, tmp: raw.update(stages={"method": "quantize"}), True),
    "stage-a-string": (lambda raw, tmp: raw.update(stages=["quantize"]), True),
    "key-at-wrong-level": (lambda raw, tmp: raw.update(max_length=8), True),
}


# mutations that rewrite every label: applied before the others, which change single rows
RENAMING = {"string-labels", "unseen-name", *(name for name in STRUCTURE if name.startswith("head-"))}


# mutations that set the same field: the second would undo the first
SAME_FIELD = [{"test-is-train", "no-test", "no-test-eval-is-train"}, {"teacher-is-a-file", "teacher-inside-output"}]


def _overwrite(a, b):
    return any({a, b} <= group for group in SAME_FIELD)


def _write(raw, text_additions, path):
    text = yaml.safe_dump(raw, allow_unicode=True)
    path.write_text(text + "".join(text_additions))


def test_structural_mutations_never_succeed_silently(assets, tmp_path, capsys):
    rng = random.Random(SEED)
    names = sorted(STRUCTURE)
    (tmp_path / "victim").mkdir()
    outcomes = {0: 0, 2: 0}
    pairs = [pair for pair in (rng.sample(names, 2) for _ in range(40)) if not _overwrite(*pair)][:12]
    cases = [[name] for name in names] + pairs  # each alone, then pairs
    for case, picked in enumerate(cases):
        case_dir = tmp_path / f"case{case}"
        case_dir.mkdir()
        raw = tiny_recipe(assets, {"name": "int8", "method": "quantize", "calibration_samples": 8})
        raw["data"].update(train_limit=16, eval_limit=8, test_limit=8)
        text_additions = []
        for name in sorted(picked, key=lambda name: name not in RENAMING):  # renaming first: later ones edit rows
            change, _ = STRUCTURE[name]
            if isinstance(change, str):
                text_additions.append(change)
            else:
                change(raw, case_dir)
        must_fail = any(STRUCTURE[name][1] for name in picked)
        recipe = case_dir / "recipe.yaml"
        _write(raw, text_additions, recipe)
        code = cli_main(["run", str(recipe), "--output-dir", str(case_dir / "out")])
        err = capsys.readouterr().err
        label = f"case {case} (seed {SEED}): {picked}"
        assert code in (0, 2) and "Traceback" not in err, f"{label}: exit {code}: {err[-2000:]}"
        assert code == (2 if must_fail else 0), f"{label}: exit {code}, expected {2 if must_fail else 0}: {err[-800:]}"
        outcomes[code] += 1
        if code == 2:
            assert err.strip().splitlines()[-1].startswith("hf-compress: error:"), label
        else:
            assert (case_dir / "out" / "00-int8" / "model.safetensors").is_file(), label
        assert not list((tmp_path / "victim").iterdir())
    assert outcomes[0] >= 2 and outcomes[2] >= len(names), outcomes
