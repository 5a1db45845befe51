"""`hf-compress auto`: the search's config, space, choice, pruner and latency cache on their own, and whole searches
on the tiny BERT teacher and CSV splits (outputs, replay, resume, budget, one read of the test split, CLI errors)."""

import json
import math

import optuna
import pytest
import torch
import yaml
from conftest import bert_config
from optuna.distributions import CategoricalDistribution
from tiny_assets import FINETUNE, expect_cli_error, make_assets, tiny_recipe
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

import hf_compress.auto.finals as finals
import hf_compress.auto.latency as latency
import hf_compress.auto.screen as screen
import hf_compress.auto.search as search_module
from hf_compress.auto import SearchConfig, run_search
from hf_compress.auto.choose import choose, pareto, standard_error
from hf_compress.auto.config import parse_drop, parse_duration, parse_shape
from hf_compress.auto.screen import BoundarySampler, FloorPruner
from hf_compress.auto.space import Shape, build_untrained, candidates, shapes, teacher_shape
from hf_compress.cli import main as cli_main
from hf_compress.recipes import RecipeError, load_recipe, parse_recipe
from hf_compress.runner import run_recipe

# a search small enough for the tiny teacher: 2 depths x 2 head counts, a few steps, few timing rounds
TINY = dict(budget=900, screen_steps=6, final_steps=8, latency_repeats=2, depths=[2, 4], heads=[2, 4],
            homodistil={"per_device_train_batch_size": 8, "use_cpu": True})  # fmt: skip


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("auto-assets"))


@pytest.fixture(autouse=True)
def latency_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(latency.CACHE_ENV, str(tmp_path / "cache"))


def tiny_search_recipe(assets, **auto):
    raw = tiny_recipe(assets, FINETUNE)
    if auto:
        raw["auto"] = auto
    return raw


# ---- config -----------------------------------------------------------------------------------------------


def test_durations_drops_and_shapes_parse_as_written():
    assert parse_duration("2h") == 7200 and parse_duration("90m") == 5400 and parse_duration(45) == 45
    assert parse_drop("3%") == (3.0, "percent") and parse_drop(1.5) == (1.5, "points")
    assert parse_shape("8x128") == (8, 128)
    teacher = 0.80
    assert SearchConfig(max_drop="3%").floor(teacher) == pytest.approx(0.776)
    assert SearchConfig(max_drop=1.5).floor(teacher) == pytest.approx(0.785)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"max_drop": "-1%"}, "max_drop must be >= 0"),
        ({"max_drop": "three"}, "not a number"),
        ({}, "give a constraint"),
        ({"max_drop": "3%", "runtimes": ["tensorrt"]}, "runtimes: unknown 'tensorrt'"),
        ({"max_drop": "3%", "methods": ["nas"]}, "methods: unknown 'nas'"),
        ({"max_drop": "3%", "quant_methods": ["int3"]}, "quant_methods: unknown 'int3'"),
        ({"max_drop": "3%", "budget": "soon"}, "not a duration"),
        ({"min_speedup": 2, "max_latency_ms": 5}, "one latency constraint"),
        ({"max_drop": "3%", "objective_shape": "8by128"}, "not BATCHxLENGTH"),
        ({"max_drop": "3%", "homodistil": {"max_steps": 5}}, "chosen by the search"),
        ({"max_drop": "3%", "screen_prune_fraction": 1.0}, r"in \(0, 1\)"),
    ],
)
def test_bad_search_settings_are_one_line_errors(values, message):
    with pytest.raises(ValueError, match=message):
        SearchConfig(**values)


def test_latency_constraints_decide_fast_enough():
    assert SearchConfig(min_speedup=3).fast_enough(3.1, 50) and not SearchConfig(min_speedup=3).fast_enough(2.9, 1)
    within = SearchConfig(max_latency_ms=20)
    assert within.fast_enough(1.0, 19) and not within.fast_enough(9, 21)


# ---- choice -----------------------------------------------------------------------------------------------


def row(key, validation, speedup, fast=True):
    return {"key": key, "validation": validation, "speedup": speedup, "ms": 1 / speedup, "fast_enough": fast}


def test_the_fastest_feasible_candidate_is_chosen_and_speed_ties_go_to_accuracy():
    rows = [row("slow", 0.80, 2.0), row("fast", 0.78, 5.0), row("faster-but-bad", 0.70, 8.0),
            row("as-fast-more-accurate", 0.79, 4.9), row("unmeasured", None, 9.0)]  # fmt: skip
    assert choose(rows, floor=0.775, validation_rows=1000)["key"] == "as-fast-more-accurate"
    assert choose(rows, floor=0.795, validation_rows=1000)["key"] == "slow"
    assert choose(rows, floor=0.9, validation_rows=1000) is None


def test_latency_only_choice_does_not_pick_on_noise():
    se = standard_error(0.80, 1000)
    rows = [row("best", 0.80, 2.0), row("within-noise-faster", 0.80 - se / 2, 3.0), row("too-slow", 0.9, 1.0, False)]
    assert choose(rows, floor=None, validation_rows=1000)["key"] == "within-noise-faster"
    rows[1]["validation"] = 0.80 - 2 * se
    assert choose(rows, floor=None, validation_rows=1000)["key"] == "best"


def test_pareto_front_keeps_only_undominated_rows():
    rows = [row("a", 0.8, 2.0), row("b", 0.7, 3.0), row("dominated", 0.69, 2.5), row("c", 0.9, 1.0)]
    assert [r["key"] for r in pareto(rows)] == ["b", "a", "c"]
    assert math.isclose(standard_error(0.5, 100), 0.05)


# ---- screening pruner ---------------------------------------------------------------------------------------


def test_floor_pruner_gives_early_reports_more_room():
    pruner = FloorPruner(floor=0.80, slack=0.02, reports=[10, 15, 20])
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    trial.report(0.75, 10)  # 5 points low with 2 reports to come: allowance 6 points
    assert not trial.should_prune()
    trial.report(0.75, 20)  # at the end the allowance is 2 points
    assert trial.should_prune()
    assert not FloorPruner(None, 0.02, [10]).prune(study, study.trials[0])  # no floor: nothing is pruned


# ---- space and latency --------------------------------------------------------------------------------------


def test_shapes_follow_the_teachers_head_size_and_ffn_ratio():
    teacher = BertForSequenceClassification(bert_config(num_labels=2))
    found = shapes(teacher, SearchConfig(max_drop="3%", depths=[2, 4], heads=[2, 4]))
    assert found[0] == teacher_shape(teacher) == Shape(4, 4, 32, 64)  # the quantization-only subspace
    assert Shape(2, 2, 16, 32) in found and len(found) == 4
    cut = build_untrained(teacher, Shape(2, 2, 16, 32))
    assert (cut.config.num_hidden_layers, cut.config.hidden_size, cut.config.intermediate_size) == (2, 16, 32)
    with pytest.raises(ValueError, match="never larger than its teacher"):
        shapes(teacher, SearchConfig(max_drop="3%", depths=[8]))


def test_latency_is_cached_per_machine_and_candidate(tmp_path, monkeypatch):
    teacher = BertForSequenceClassification(bert_config(num_labels=2)).eval()
    config = SearchConfig(max_drop="3%", depths=[2], heads=[2], runtimes=["torch"], latency_repeats=1)
    every = candidates(shapes(teacher, config), config)
    calls = []
    real = latency.evaluation.latency_ratios

    def timed(*args, **kwargs):  # the real timing, its control set quiet (a busy test machine must not matter)
        calls.append(1)
        ratios = real(*args, **kwargs)
        ratios[latency.evaluation.CONTROL] = {k: (1.0 if "_" not in k else v)
                                              for k, v in ratios[latency.evaluation.CONTROL].items()}  # fmt: skip
        return ratios

    monkeypatch.setattr(latency.evaluation, "latency_ratios", timed)
    first = latency.measure_latency(teacher, every, config.shapes, tmp_path / "w", latency.LatencyCache())
    again = latency.measure_latency(teacher, every, config.shapes, tmp_path / "w", latency.LatencyCache())
    assert len(calls) == 2 and first == again  # two shapes timed once; the second search read the cache
    assert all(r["8x128"] > 0 and 0.5 < r["8x128_control"] < 2 for r in first.values())


# ---- whole searches on the tiny teacher ---------------------------------------------------------------------


def test_search_writes_the_chosen_model_its_replay_recipe_and_the_pareto_report(assets, tmp_path, monkeypatch):
    contexts = []
    real_context = finals.context
    monkeypatch.setattr(finals, "context", lambda *a, **k: contexts.append(k.get("test", False)) or
                        real_context(*a, **k))  # fmt: skip
    recipe = parse_recipe(tiny_search_recipe(assets))
    summary = run_search(recipe, tmp_path / "out", SearchConfig(max_drop="50%", **TINY))
    out = tmp_path / "out" / "auto"
    assert contexts.count(True) == 1  # the test split is loaded once, for the final report
    saved = json.loads((out / "summary.json").read_text())
    assert saved["chosen"]["key"] == summary["chosen"]["key"] and saved["constraint"]["met"]
    chosen = saved["chosen"]
    assert chosen["accuracy_validation"] >= saved["constraint"]["floor_validation"]
    assert set(chosen["speedup"]) == {"8x128", "1x128"} and chosen["accuracy_test"] is not None
    assert {"accuracy_validation", "accuracy_test"} <= set(saved["teacher"])
    assert {c["stage"] for c in saved["candidates"]} >= {"teacher-shape", "final"}
    screened = {c["key"].split("/")[0] for c in saved["candidates"] if c["stage"].startswith("screen")}
    skipped = {s["key"] for s in saved["not_screened"]}
    assert len(screened | skipped) == 3 and not screened & skipped  # every shape: screened, or said why not
    assert all(s["why"].startswith(("ruled out", "slower than", "not reached")) for s in saved["not_screened"])
    feasible = [c for c in saved["candidates"] if c["validation"] is not None and c["fast_enough"]
                and c["validation"] >= saved["constraint"]["floor_validation"]]  # fmt: skip
    assert max(c["speedup"] for c in feasible) <= chosen_speed(saved) * 1.05 + 1e-9  # none faster was passed over
    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert model.config.num_hidden_layers == chosen["shape"]["layers"]
    assert (out / "model-onnx" / "model.onnx").is_file() == (chosen["runtime"] == "onnxruntime")
    assert "| candidate |" in (out / "pareto.md").read_text() and (out / "pareto.png").stat().st_size > 1000
    replayed = run_recipe(load_recipe(out / "recipe.yaml"), tmp_path / "replay")
    last = tmp_path / "replay" / replayed[-1]["folder"]
    ours, theirs = model.state_dict(), AutoModelForSequenceClassification.from_pretrained(last).state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # the recipe replays the same model


def chosen_speed(summary):
    return next(c["speedup"] for c in summary["candidates"] if c["key"] == summary["chosen"]["key"])


def test_a_killed_search_resumes_without_redoing_finished_work(assets, tmp_path, monkeypatch):
    recipe = parse_recipe(tiny_search_recipe(assets))
    config = SearchConfig(max_drop="50%", **TINY)
    real_final = finals.train_final

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as kill -9 would, after the screening trials were stored

    monkeypatch.setattr(finals, "train_final", killed)
    with pytest.raises(KeyboardInterrupt):
        run_search(recipe, tmp_path / "out", config)
    trained = []
    real_trainer = screen.HomoDistilTrainer
    monkeypatch.setattr(screen, "HomoDistilTrainer", lambda *a, **k: trained.append(1) or real_trainer(*a, **k))
    monkeypatch.setattr(finals, "train_final", real_final)
    summary = run_search(recipe, tmp_path / "out", config)
    assert trained == [] and summary["constraint"]["met"]  # no screening run was repeated
    study = optuna.load_study(study_name="screen", storage=f"sqlite:///{tmp_path / 'out' / 'auto' / 'study.db'}")
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    screened = [t.params["shape"] for t in study.trials]
    assert len(finished) == 2 and len(set(screened)) == len(screened)  # each shape screened once


def test_a_budget_too_small_for_the_finals_returns_the_best_measured_and_says_what_was_not_tried(
    assets, tmp_path, monkeypatch
):
    monkeypatch.setattr(search_module, "FINAL_OVERHEAD_S", 1e6)  # no final fits in what is left
    recipe = parse_recipe(tiny_search_recipe(assets))
    summary = run_search(recipe, tmp_path / "out", SearchConfig(max_drop="50%", **TINY))
    assert summary["not_tried"] and summary["chosen"]["key"].startswith("L4-H32-A4-F64/")  # the teacher's shape
    assert "Not tried within the budget" in (tmp_path / "out" / "auto" / "pareto.md").read_text()


# ---- CLI and recipe section ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-drop=-1%"], "max_drop must be >= 0"),
        (["--max-drop", "3%", "--runtimes", "torch,tensorrt"], "unknown 'tensorrt'"),
        (["--max-drop", "3%", "--budget", "5s"], "too small to train anything"),
        ([], "give a constraint"),
    ],
)
def test_bad_constraints_are_one_line_errors_before_any_work(assets, tmp_path, capsys, flags, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_search_recipe(assets)))
    code = cli_main(["auto", str(path), "--output-dir", str(tmp_path / "out"), *flags])
    expect_cli_error(capsys, code, message)
    assert not (tmp_path / "out").exists()


def test_recipe_auto_section_is_checked_and_compression_stages_are_refused(assets, tmp_path):
    with pytest.raises(RecipeError, match="auto: unknown key"):
        parse_recipe(tiny_search_recipe(assets, max_drop="3%", depth=[2]))
    with pytest.raises(RecipeError, match="max_drop must be >= 0"):
        parse_recipe(tiny_search_recipe(assets, max_drop="-2%"))
    raw = tiny_recipe(assets, FINETUNE, {"name": "int8", "method": "quantize"})
    with pytest.raises(RecipeError, match="builds the compression stages itself"):
        run_search(parse_recipe(raw), tmp_path / "out", SearchConfig(max_drop="3%", **TINY))
    assert parse_recipe(tiny_search_recipe(assets, max_drop="3%")).auto == {"max_drop": "3%"}


@pytest.mark.parametrize("boundary", [0, 3, 9, 14, 15])
def test_boundary_sampler_bisects_to_the_fastest_passing_shape(boundary):
    """Shapes 0..14 fastest first; those from ``boundary`` on pass. The sampler finds the boundary in about
    log2(15) trials plus one more finalist, and never screens a shape twice."""
    order = [f"s{i}" for i in range(15)]
    sampler = BoundarySampler(order, floor=0.8, slack=0.0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    while not sampler.settled(study.trials, 2) and sampler.next_shape(study.trials) is not None:
        study.optimize(lambda t: 0.9 if order.index(t.suggest_categorical("shape", order)) >= boundary else 0.5,
                       n_trials=1)  # fmt: skip
    screened = [t.params["shape"] for t in study.trials]
    passing = sorted(order.index(s) for s in screened if order.index(s) >= boundary)
    assert (passing[0] if passing else 15) == boundary and len(passing) >= min(2, 15 - boundary)
    assert len(set(screened)) == len(screened) and len(screened) <= 7  # when nothing passes: no full scan


def test_an_interrupted_or_failed_screening_trial_is_handled_on_resume(tmp_path):
    order = ["fast", "mid", "slow"]
    sampler = BoundarySampler(order, floor=0.8, slack=0.0)
    path = tmp_path / "study.db"
    study = screen.open_study(path, FloorPruner(0.8, 0.0, [1]), sampler)
    killed = study.ask({"shape": CategoricalDistribution(order)})  # left RUNNING, as kill -9 leaves it
    assert killed.params["shape"] == "mid"
    again = screen.open_study(path, FloorPruner(0.8, 0.0, [1]), sampler)
    assert again.trials[0].state == optuna.trial.TrialState.FAIL
    assert sampler.next_shape(again.trials) == "mid"  # the interrupted shape is screened again

    def crashes(trial):
        trial.suggest_categorical("shape", order)
        trial.set_user_attr("error", "RuntimeError: out of memory")
        raise RuntimeError("out of memory")

    again.optimize(crashes, n_trials=1, catch=(Exception,))
    assert screen.trial_passes(again.trials[-1], 0.8, 0.0) is False  # a verdict: not retried forever
    assert sampler.next_shape(again.trials) == "slow"


def test_noisy_latency_is_used_but_not_cached(tmp_path, monkeypatch):
    teacher = BertForSequenceClassification(bert_config(num_labels=2)).eval()
    config = SearchConfig(max_drop="3%", depths=[2], heads=[2], runtimes=["torch"], quant_methods=["none"])
    every = candidates(shapes(teacher, config), config)

    def busy(reference, models, shapes, reps):
        row = {"8x128": 0.5, "8x128_ms": 1.0, "1x128": 0.5, "1x128_ms": 1.0}
        return {**{k: dict(row) for k in models}, latency.evaluation.CONTROL: {"8x128": 1.3, "1x128": 1.0}}

    monkeypatch.setattr(latency.evaluation, "latency_ratios", busy)
    cache = latency.LatencyCache()
    measured = latency.measure_latency(teacher, every, config.shapes, tmp_path / "w", cache)
    assert all(r["8x128"] == 0.5 for r in measured.values()) and cache.table(teacher) == {}


def test_a_resumed_search_over_budget_keeps_its_finals_and_other_settings_start_over(assets, tmp_path):
    recipe = parse_recipe(tiny_search_recipe(assets))
    config = SearchConfig(max_drop="50%", **TINY)
    first = run_search(recipe, tmp_path / "out", config)
    out = tmp_path / "out" / "auto"
    assert json.loads((out / "elapsed.json").read_text())["elapsed_s"] > 0
    (out / "elapsed.json").write_text(json.dumps({"elapsed_s": config.budget_s + 100}))  # killed after the budget
    again = run_search(recipe, tmp_path / "out", config)
    assert again["chosen"]["key"] == first["chosen"]["key"] and again["elapsed_s"] > config.budget_s
    assert not any(item.startswith("final") for item in again["not_tried"])  # finished finals are not dropped
    stricter = run_search(recipe, tmp_path / "out", SearchConfig(**{**TINY, "max_drop": "40%"}))
    assert stricter["elapsed_s"] < config.budget_s  # a different search: its own budget, its own study


@pytest.mark.parametrize(
    "data, message",
    [({"metric": "mse"}, "lower-is-better"), ({"eval_split": "test"}, "would choose on the split it reports")],
)
def test_searches_that_would_choose_wrongly_are_refused(assets, tmp_path, data, message):
    raw = tiny_search_recipe(assets)
    raw["data"].update(data)
    with pytest.raises(ValueError, match=message):
        run_search(parse_recipe(raw), tmp_path / "out", SearchConfig(max_drop="3%", **TINY))


def test_the_sampler_uses_depth_and_width_dominance_on_the_grid():
    """3 depths x 3 head counts, timed so that speed order interleaves depth and width; a shape passes when
    layers x heads >= 24. A failure rules out every shape no deeper and no wider, so the fastest pass is found
    without screening the shapes it rules out, and it is the true fastest passing shape."""
    grid = [(layers, heads) for layers in (2, 3, 6) for heads in (4, 8, 12)]
    order = sorted(grid, key=lambda s: s[0] * s[1] + 0.1 * s[0])  # fastest first
    keys = [f"L{layers}-A{heads}" for layers, heads in order]
    sizes = dict(zip(keys, order))
    sampler = BoundarySampler(keys, floor=0.8, slack=0.0, sizes=sizes)
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        layers, heads = sizes[trial.suggest_categorical("shape", keys)]
        return 0.9 if layers * heads >= 24 else 0.5

    while not sampler.settled(study.trials, 2) and sampler.next_shape(study.trials) is not None:
        study.optimize(objective, n_trials=1)
    screened = [t.params["shape"] for t in study.trials]
    passing = [k for k in keys if sizes[k][0] * sizes[k][1] >= 24]
    assert passing[0] in screened and len(screened) < len(keys)
    assert min(keys.index(k) for k in screened if k in passing) == keys.index(passing[0])
