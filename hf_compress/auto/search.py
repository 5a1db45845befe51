"""``hf-compress auto``: the fastest model within an accuracy budget (or the most accurate within a latency one).

Phases, each resumable (a killed search given the same command again continues):
1. the teacher: the recipe's finetune stages through the runner (``OUTPUT/auto/teacher``);
2. latency: every shape x quantization x runtime cut from the teacher untrained and timed on this machine
   (cached per machine);
3. screening: a short HomoDistil run per shape, fastest first, as trials of an Optuna study in SQLite
   (``study.db``) with `FloorPruner` stopping runs that fall too far below the constraint, until enough shapes pass;
4. finals: the fastest passing shapes trained to ``final_steps`` through the runner, each then measured in every
   quantization x runtime variant on the validation split;
5. the choice (`choose.choose`), the chosen model's own stages (quantize) through the runner, its test metric
   (the test split is read here, once), and the outputs (`report`).
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import evaluation
from ..lock import output_lock
from ..metrics import higher_is_better
from ..recipes import Recipe
from ..runner.context import Context
from ..runner.models import load_stage_output
from ..store import read_done
from . import finals, report
from .choose import choose
from .config import SearchConfig
from .latency import LatencyCache, measure_latency
from .screen import BoundarySampler, FloorPruner, objective_for, open_study, report_steps, trial_passes
from .space import Shape, candidates, shapes, teacher_shape
from .state import Heartbeat, start_or_resume

logger = logging.getLogger(__name__)
MIN_BUDGET_S = 60.0  # below this nothing can be trained and timed: an error before any work
FINAL_OVERHEAD_S = 90.0  # per finalist beyond its training: the variants' exports and evaluations, the runner's
# measurements


@dataclass
class Search:
    """What the phases share."""

    recipe: Recipe
    config: SearchConfig
    out: Path
    start: float = field(default_factory=time.monotonic)
    ctx: Context | None = None
    teacher_dir: str = ""
    teacher_metric: float = 0.0
    floor: float | None = None
    latency: dict = field(default_factory=dict)
    shapes: list[Shape] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    not_tried: list[str] = field(default_factory=list)
    steps: int = 0
    screen: Any = None  # the Optuna study of the screening runs
    skipped: list[dict] = field(default_factory=list)  # shapes never screened, and why

    def left(self) -> float:
        return self.config.budget_s - (time.monotonic() - self.start)

    def say(self, message: str) -> None:
        elapsed = time.monotonic() - self.start
        logger.info("[auto %s / %s, %s left] %s", _clock(elapsed), _clock(self.config.budget_s),
                    _clock(max(0.0, self.left())), message)  # fmt: skip

    @property
    def metric(self) -> str:
        return self.recipe.data.metric

    def speed(self, key: str) -> tuple[float, float]:
        """(speed-up, ms) of candidate ``key`` at the objective shape."""
        row = self.latency[key]
        return 1 / row[self.config.objective_shape], row[f"{self.config.objective_shape}_ms"]

    def best_speed(self, shape: Shape) -> float:
        return max(self.speed(c.key)[0] for c in candidates([shape], self.config)
                   if self.config.fast_enough(*self.speed(c.key)))  # fmt: skip

    def feasible_shape(self, shape: Shape) -> bool:
        return any(self.config.fast_enough(*self.speed(c.key)) for c in candidates([shape], self.config))


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def check_before_work(recipe: Recipe, config: SearchConfig) -> None:
    """Everything that can be refused without loading a model."""
    finals.check_input_recipe(recipe)
    data = recipe.data
    if not higher_is_better(data.metric):
        raise ValueError(f"data.metric {data.metric!r} is lower-is-better; hf-compress auto searches for a metric "
                         "that higher is better (accuracy, f1): its drop and noise are in points of it.")  # fmt: skip
    if data.eval_split is None:
        raise ValueError("hf-compress auto chooses on the validation split: set data.eval_split.")
    if data.test_split is not None and data.test_split == data.eval_split:
        raise ValueError(f"data.eval_split and data.test_split are both {data.eval_split!r}: the search would choose "
                         "on the split it reports; give a separate validation split.")  # fmt: skip
    if data.source == "files" and data.files and data.files.get("validation") == data.files.get("test"):
        raise ValueError("data.files validation and test are the same file: the search would choose on the split "
                         "it reports; give a separate validation file.")  # fmt: skip
    if config.budget_s < MIN_BUDGET_S:
        raise ValueError(f"budget {config.budget!r} is too small to train anything; give at least "
                         f"{int(MIN_BUDGET_S)} s (a real search wants '30m' or more).")  # fmt: skip
    if "onnxruntime" in config.runtimes:
        from ..export.onnx import require_onnx

        require_onnx()


def run_search(recipe: Recipe, output_dir: str | Path, config: SearchConfig, force: bool = False) -> dict:
    """Search, write ``OUTPUT/auto/`` and return its summary (see `report.summary`). The same call again resumes
    an interrupted search (its budget counts the time already spent); other settings, or ``force``, start over."""
    check_before_work(recipe, config)
    out = Path(output_dir).expanduser().resolve() / "auto"
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        start = time.monotonic() - start_or_resume(out, recipe, config, force)
        search = Search(recipe=recipe, config=config, out=out, start=start)
        with Heartbeat(out, start):
            _teacher(search)
            _latency(search)
            _teacher_variants(search)
            _screen(search)
            _finals(search)
            return _finish(search)


def _teacher(search: Search) -> None:
    search.say("teacher")
    search.teacher_dir = finals.prepare_teacher(search.recipe, search.out)
    search.ctx = finals.context(search.recipe, search.teacher_dir, search.out)
    ctx = search.ctx
    search.teacher_metric = evaluation.task_metric(ctx.teacher, ctx.data["validation"], search.metric, ctx.collator,
                                                   search.recipe.data.trust_remote_metric)  # fmt: skip
    search.floor = search.config.floor(search.teacher_metric)
    search.say(f"teacher validation {search.metric} {search.teacher_metric:.4f}; floor "
               f"{'-' if search.floor is None else f'{search.floor:.4f}'}")  # fmt: skip


def _latency(search: Search) -> None:
    teacher = search.ctx.teacher.eval()
    search.shapes = shapes(teacher, search.config)
    every = candidates(search.shapes, search.config)
    search.say(f"latency of {len(every)} candidates ({len(search.shapes)} shapes) at {search.config.shapes}")
    search.latency = measure_latency(teacher, every, search.config.shapes, search.out / "latency-work",
                                     LatencyCache(), search.config.latency_repeats, progress=search.say)  # fmt: skip
    shutil.rmtree(search.out / "latency-work", ignore_errors=True)
    (search.out / "latency.json").write_text(report.dumps(search.latency))


def _add_rows(search: Search, shape: Shape, metrics: dict[str, float], stage: str, steps: int) -> None:
    for candidate in candidates([shape], search.config):
        speedup, ms = search.speed(candidate.key)
        timed = search.latency[candidate.key]
        search.rows.append({**candidate.as_dict(), "stage": stage, "steps": steps,
                            "validation": metrics.get(f"{candidate.quant}/{candidate.runtime}"),
                            "speedup": speedup, "ms": ms, "fast_enough": search.config.fast_enough(speedup, ms),
                            "speedups": {s: 1 / timed[s] for s in search.config.shapes}})  # fmt: skip


def _teacher_variants(search: Search) -> None:
    """The quantization-only subspace: the teacher's own shape in every variant (no training)."""
    full = teacher_shape(search.ctx.teacher)
    if full not in search.shapes:
        return
    search.say("quantization variants of the teacher")
    metrics = finals.variant_metrics(search.ctx, search.ctx.teacher, search.config, search.out / "runs" / "teacher",
                                     search.metric)  # fmt: skip
    _add_rows(search, full, metrics, "teacher-shape", 0)


def _seconds_per_step(study) -> float | None:
    """The median screening run's seconds per step: what a final's step costs (both spend most of their steps at
    the pruned shape after a pruning phase); one run slowed by a busy machine does not set it."""
    values = [t.user_attrs["seconds_per_step"] for t in study.trials if "seconds_per_step" in t.user_attrs]
    return statistics.median(values) if values else None


def _screen(search: Search) -> None:
    config = search.config
    full = teacher_shape(search.ctx.teacher)
    todo = [s for s in search.shapes if s != full and search.feasible_shape(s)]
    # with a floor: fastest first (bisected for the fastest that passes); without: the largest (most accurate) first
    todo.sort(key=search.best_speed, reverse=search.floor is not None)
    if not todo:
        return
    slack = config.screen_slack / 100
    sampler = BoundarySampler([s.key for s in todo], search.floor, slack, {s.key: (s.layers, s.heads) for s in todo})
    study = open_study(search.out / "study.db", FloorPruner(search.floor, slack, report_steps(config)), sampler)
    by_key = {s.key: s for s in todo}
    objective = objective_for(search.ctx, config, by_key, search.out / "screen-work", search.metric)
    search.screen = study
    while not sampler.settled(study.trials, config.finalists):
        following = sampler.next_shape(study.trials)
        if following is None:
            break
        per_step = _seconds_per_step(study)
        reserve = config.finalists * ((per_step or 0) * config.final_steps + FINAL_OVERHEAD_S)
        if search.left() <= 0 or (per_step is not None and search.left() < reserve + per_step * config.screen_steps):
            tried = {t.params.get("shape") for t in study.trials}
            search.not_tried += [f"screen {key}" for key in sampler.order if key not in tried]
            search.say("screening stopped: the rest of the budget is kept for the finals")
            break
        passed = len(_screen_passed(search, study, by_key))
        search.say(f"screening {following} ({passed}/{config.finalists} passed so far)")
        study.optimize(objective, n_trials=1, catch=(Exception,))  # a failed shape is a verdict (logged)
    search.skipped = _skipped(study, todo, search.floor, slack)
    shutil.rmtree(search.out / "screen-work", ignore_errors=True)


def _skipped(study, todo: list[Shape], floor: float | None, slack: float) -> list[dict]:
    """The shapes never screened, and why: a failure of a shape at least as deep and as wide rules them out, they are
    slower than a shape that passed, or the budget ran out first."""
    by_key = {s.key: s for s in todo}
    verdicts = {}
    for trial in study.trials:
        verdict = trial_passes(trial, floor, slack)
        if verdict is not None:
            verdicts[trial.params.get("shape")] = verdict
    failed = [by_key[k] for k, v in verdicts.items() if v is False and k in by_key]
    passed = [by_key[k] for k, v in verdicts.items() if v and k in by_key]
    skipped = []
    for shape in todo:
        if verdicts.get(shape.key) is not None:
            continue
        worse = next((f for f in failed if shape.layers <= f.layers and shape.heads <= f.heads), None)
        faster = next((p for p in passed if todo.index(p) < todo.index(shape)), None) if floor is not None else None
        why = (f"ruled out: {worse.key} failed" if worse else f"slower than {faster.key}, which passed" if faster
               else "not reached within the budget")  # fmt: skip
        skipped.append({"key": shape.key, "why": why})
    return skipped


def _screen_passed(search: Search, study, by_key: dict[str, Shape]) -> list[Shape]:
    """Shapes whose screening result is within ``screen_slack`` of the floor (with no floor: every finished one),
    fastest first."""
    slack = search.config.screen_slack / 100
    ok = [by_key[t.params["shape"]] for t in study.trials
          if t.params.get("shape") in by_key and trial_passes(t, search.floor, slack)]  # fmt: skip
    return sorted(ok, key=search.best_speed, reverse=True)


def _finals(search: Search) -> None:
    study = search.screen
    if study is None:
        return
    by_key = {s.key: s for s in search.shapes}
    for trial in study.trials:
        if trial.params.get("shape") in by_key:
            search.steps += trial.user_attrs.get("steps", 0)
            shape = by_key[trial.params["shape"]]
            value = trial.value if trial.state.name == "COMPLETE" else None
            search.rows.append(_screen_row(search, shape, value, trial))
    chosen = _finalists(search, study, by_key)
    per_step = _seconds_per_step(study) or 0.0
    for index, shape in enumerate(chosen[: search.config.finalists]):
        finished = read_done(search.out / "runs" / shape.key / "00-homodistil") is not None  # a resumed search
        cost = per_step * search.config.final_steps + FINAL_OVERHEAD_S
        if not finished and search.left() < cost:
            search.not_tried += [f"final {s.key}" for s in chosen[index : search.config.finalists]]
            search.say(f"no time left for the final of {shape.key} (about {cost:.0f} s)")
            break
        search.say(f"final {index + 1}/{min(len(chosen), search.config.finalists)}: {shape.key}, "
                    f"{search.config.final_steps} steps")  # fmt: skip
        folder = finals.train_final(search.recipe, search.teacher_dir, search.config, shape, search.out)
        search.steps += search.config.final_steps
        model = load_stage_output(folder, search.recipe.data.task)
        metrics = finals.variant_metrics(search.ctx, model, search.config, folder.parent, search.metric)
        _add_rows(search, shape, metrics, "final", search.config.final_steps)


def _last_value(trial) -> float | None:
    if trial.state.name == "COMPLETE":
        return trial.value
    return trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None


def _finalists(search: Search, study, by_key: dict[str, Shape]) -> list[Shape]:
    """The shapes trained to the full budget: those that passed screening, fastest first; with a latency constraint
    only, the most accurate; when none passed, the nearest misses (a short run under-estimates a full one)."""
    values = {t.params["shape"]: _last_value(t) for t in study.trials if t.params.get("shape") in by_key}
    values = {key: value for key, value in values.items() if value is not None}
    chosen = _screen_passed(search, study, by_key)
    if search.floor is None:
        chosen = sorted(chosen, key=lambda s: values.get(s.key, 0), reverse=True)
    elif not chosen and values:
        chosen = [by_key[key] for key in sorted(values, key=values.get, reverse=True)]
        search.say(f"no shape passed screening; the nearest misses go to the finals: {[s.key for s in chosen[:2]]}")
    return chosen


def _screen_row(search: Search, shape: Shape, value: float | None, trial) -> dict:
    key = f"{shape.key}/none/torch"
    speedup, ms = search.speed(key) if key in search.latency else (float("nan"), float("nan"))
    return {"key": f"{shape.key}/screen", "layers": shape.layers, "heads": shape.heads, "hidden": shape.hidden,
            "ffn": shape.ffn, "quant": "none", "runtime": "torch", "stage": f"screen ({trial.state.name.lower()})",
            "steps": trial.user_attrs.get("steps", 0), "validation": None, "screen_validation": value,
            "speedup": speedup, "ms": ms, "fast_enough": False}  # fmt: skip


def _finish(search: Search) -> dict:
    rows = search.rows
    rows_n = len(search.ctx.data["validation"])
    picked = choose(rows, search.floor, rows_n)
    met = picked is not None
    if picked is None:  # nothing met the constraint: the most accurate measured model, said plainly
        measured = [r for r in rows if r["validation"] is not None]
        fast = [r for r in measured if r["fast_enough"]] or measured  # within the latency constraint if any is
        picked = max(fast, key=lambda r: (r["validation"], r["speedup"])) if fast else None
    if picked is None:
        raise RuntimeError("The search measured no model within its budget; give a larger --budget.")
    return report.write_outputs(search, picked, met)
