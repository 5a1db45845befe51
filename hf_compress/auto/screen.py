"""Screening: a short HomoDistil run per shape as one Optuna trial, in an SQLite study that a killed search
resumes. `BoundarySampler` picks the next shape (bisecting the speed order for the fastest one that passes), each
run reports its validation metric at a few steps after it reaches its shape, and `FloorPruner` stops one that falls
too far below the accuracy constraint (the allowance shrinks towards the end of the run)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.trial import TrialState
from transformers import TrainerCallback

from .. import evaluation
from ..prune import HomoDistilConfig, HomoDistilTrainer
from .config import SearchConfig
from .space import Shape

logger = logging.getLogger(__name__)
STUDY = "screen"
# the settings of the benchmarks' frontier run (recipes/minilm-rt-frontier.yaml): what a homodistil stage of the
# search uses unless the search's `homodistil` mapping says otherwise
HOMODISTIL_DEFAULTS = {
    "per_device_train_batch_size": 32, "learning_rate": 1.0e-4, "warmup_steps": 20, "weight_decay": 0.01,
    "temperature": 2.0, "kd_weight": 1.0, "hidden_weight": 1.0, "attention_weight": 1.0, "logging_steps": 50,
    "report_to": "none",
}  # fmt: skip


def homodistil_fields(config: SearchConfig, shape: Shape, steps: int, prune_fraction: float) -> dict:
    """The homodistil stage fields that train ``shape`` in ``steps`` (pruning over the first share of them)."""
    end = max(1, int(steps * prune_fraction))
    return {**HOMODISTIL_DEFAULTS, **config.homodistil, **shape.targets(), "max_steps": steps,
            "prune_start_step": 0, "prune_end_step": end,
            "prune_every": config.homodistil.get("prune_every", max(1, end // 20))}  # fmt: skip


def report_steps(config: SearchConfig) -> list[int]:
    """Steps at which a screening run is evaluated: half-way through its recovery at the final shape, and the end.
    Not when it reaches its shape: a deep cut (6 -> 3 layers) predicts the majority class right then (0.571 on
    Rotten Tomatoes for L3-H256, the frontier shape, which recovers to 97 % of the teacher)."""
    end, total = max(1, int(config.screen_steps * config.screen_prune_fraction)), config.screen_steps
    return sorted({(end + total) // 2, total})


class FloorPruner(BasePruner):
    """Prune a trial whose latest validation metric is below ``floor - allowance``; the allowance is ``slack``
    times the number of reports still to come plus one (a run still recovering from pruning is given more room).
    Without a floor (a latency constraint only) nothing is pruned."""

    def __init__(self, floor: float | None, slack: float, reports: list[int]) -> None:
        self.floor, self.slack, self.reports = floor, slack, reports

    def allowance(self, step: int) -> float:
        remaining = sum(1 for s in self.reports if s > step)
        return self.slack * (remaining + 1)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if self.floor is None or step is None:
            return False
        return trial.intermediate_values[step] < self.floor - self.allowance(step)


class _Reports(TrainerCallback):
    """Evaluate the sliced student at the report steps, report to the trial, stop the run if it is pruned."""

    def __init__(self, trial, steps: list[int], evaluate: Callable) -> None:
        self.trial, self.steps, self.evaluate = trial, steps, evaluate
        self.trainer = None
        self.pruned = False
        self.last: float | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            value = self.evaluate(self.trainer.sliced_model())
            self.trial.report(value, state.global_step)
            self.last = value
            logger.info("  step %d: validation %.4f", state.global_step, value)
            if self.trial.should_prune():
                self.pruned = True
                control.should_training_stop = True
        return control


def trial_passes(trial: optuna.trial.FrozenTrial, floor: float | None, slack: float) -> bool | None:
    """True / False for a finished screening trial (complete and within ``slack`` of the floor), None otherwise."""
    if trial.state == TrialState.PRUNED or "error" in trial.user_attrs:  # an error is a verdict: not retried forever
        return False
    if trial.state != TrialState.COMPLETE:
        return None
    return floor is None or trial.value >= floor - slack


class BoundarySampler(BaseSampler):
    """Picks the next shape to screen. ``order`` lists the shapes fastest first and ``sizes`` gives each its
    (layers, heads). With an accuracy floor the metric grows with size, so a failure rules out every shape no
    deeper and no wider than it, and a pass makes every shape slower than it useless. The sampler bisects, in speed
    order, the shapes faster than the fastest pass that no result rules out; once none is left it screens the
    nearest slower shapes for more finalists. Without a floor it screens the shapes in ``order``. Finished trials
    are its only state, so a resumed study samples where it left off."""

    def __init__(self, order: list[str], floor: float | None, slack: float,
                 sizes: dict[str, tuple[int, int]] | None = None) -> None:  # fmt: skip
        self.order, self.floor, self.slack = order, floor, slack
        self.sizes = sizes or {key: (i, i) for i, key in enumerate(order)}  # a chain: plain bisection

    def _state(self, trials: list[optuna.trial.FrozenTrial]) -> tuple[dict[str, bool], set[str]]:
        outcome, busy = {}, set()
        for t in trials:
            shape = t.params.get("shape")
            verdict = trial_passes(t, self.floor, self.slack)
            if verdict is not None:
                outcome[shape] = verdict
            elif t.state == TrialState.RUNNING:
                busy.add(shape)
        return outcome, busy

    def _open(self, outcome: dict[str, bool], busy: set[str]) -> tuple[list[int], int, list[int]]:
        """(indices faster than the fastest pass that no failure rules out, that pass's index, untried indices)."""
        untried = [i for i, key in enumerate(self.order) if key not in outcome and key not in busy]
        passes = [i for i, key in enumerate(self.order) if outcome.get(key)]
        first = min(passes) if passes else len(self.order)
        failed = [self.sizes[key] for key, ok in outcome.items() if not ok]

        def ruled_out(key: str) -> bool:
            layers, heads = self.sizes[key]
            return any(layers <= fl and heads <= fh for fl, fh in failed)

        return [i for i in untried if i < first and not ruled_out(self.order[i])], first, untried

    def next_shape(self, trials: list[optuna.trial.FrozenTrial]) -> str | None:
        outcome, busy = self._state(trials)
        candidates, first, untried = self._open(outcome, busy)
        if not untried:
            return None
        if self.floor is None:
            return self.order[untried[0]]
        if candidates:
            return self.order[candidates[len(candidates) // 2]]
        slower = [i for i in untried if i > first]
        return self.order[slower[0]] if slower else None

    def settled(self, trials: list[optuna.trial.FrozenTrial], wanted: int) -> bool:
        """Enough is screened: with a floor, no shape faster than the fastest pass is left open, and ``wanted``
        shapes pass (or no slower one is left to try); without one, ``2 x wanted`` shapes finished."""
        outcome, busy = self._state(trials)
        if self.floor is None:
            return len(outcome) >= 2 * wanted
        candidates, first, untried = self._open(outcome, busy)
        if candidates:
            return False
        passes = sum(outcome.values())
        return passes == 0 or passes >= wanted or not any(i > first for i in untried)

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name != "shape" or not isinstance(param_distribution, CategoricalDistribution):
            raise ValueError(f"BoundarySampler samples the categorical 'shape' only, not {param_name!r}.")
        trials = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        choice = self.next_shape(trials)
        if choice is None:
            raise optuna.exceptions.OptunaError("every shape has been screened")
        return choice


def open_study(path: Path, pruner: BasePruner, sampler: BaseSampler) -> optuna.Study:
    """The screening study in ``path`` (SQLite), created or resumed; trials a killed run left RUNNING are failed
    (the sampler then picks their shapes again)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=STUDY, storage=f"sqlite:///{path}", load_if_exists=True,
                                direction="maximize", pruner=pruner, sampler=sampler)  # fmt: skip
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        logger.info("screening of %s was interrupted; it will be run again", trial.params.get("shape"))
    return study


def objective_for(ctx, config: SearchConfig, shapes: dict[str, Shape], work: Path, metric: str):
    """The trial function: a screening HomoDistil run of the trial's shape, its final validation metric."""
    steps = report_steps(config)

    def evaluate(model) -> float:
        return evaluation.task_metric(model, ctx.data["validation"], metric, ctx.collator,
                                      ctx.recipe.data.trust_remote_metric)  # fmt: skip

    def objective(trial: optuna.Trial) -> float:
        shape = shapes[trial.suggest_categorical("shape", sorted(shapes))]
        logger.info("screening %s (%d steps)", shape.key, config.screen_steps)
        fields = homodistil_fields(config, shape, config.screen_steps, config.screen_prune_fraction)
        args = HomoDistilConfig(output_dir=str(work / shape.key), save_strategy="no", seed=ctx.recipe.seed,
                                **fields)  # fmt: skip
        reports = _Reports(trial, steps, evaluate)
        trainer = HomoDistilTrainer(teacher_model=ctx.teacher, args=args, train_dataset=ctx.data["train"],
                                    data_collator=ctx.collator, processing_class=ctx.processor)  # fmt: skip
        reports.trainer = trainer
        trainer.add_callback(reports)  # after the pruning callback: a report sees this step's masks
        start = time.perf_counter()
        try:
            trainer.train()
        except Exception as err:  # recorded as this shape's verdict (a failure), so a resume does not retry it
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            logger.warning("screening %s failed (%s: %s); counted as a failure", shape.key, type(err).__name__, err)
            raise
        elapsed = time.perf_counter() - start
        trial.set_user_attr("steps", trainer.state.global_step)
        trial.set_user_attr("seconds", elapsed)
        trial.set_user_attr("seconds_per_step", elapsed / max(1, trainer.state.global_step))
        if reports.pruned:
            raise optuna.TrialPruned(f"{shape.key}: below the constraint at step {trainer.state.global_step}")
        return reports.last if reports.last is not None else evaluate(trainer.sliced_model())

    return objective
