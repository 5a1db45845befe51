"""Latency ratios carry a control (the reference timed against itself) and say when it cannot be trusted."""

import time
import types

from hf_compress import evaluation


class _Sleeper:
    """A stand-in model whose every ``slow_every``-th call takes three times as long (a busy machine, made exact)."""

    config = types.SimpleNamespace(vocab_size=10, max_position_embeddings=16)

    def __init__(self, seconds: float, slow_every: int | None = None) -> None:
        self.seconds, self.slow_every, self.calls = seconds, slow_every, 0

    def eval(self):
        return self

    def __call__(self, **inputs):
        self.calls += 1
        slow = self.slow_every and self.calls % self.slow_every == 0
        time.sleep(self.seconds * (3 if slow else 1))


def test_ratios_include_a_control_near_one_on_a_steady_model():
    result = evaluation.latency_ratios(_Sleeper(0.02), {"fast": _Sleeper(0.01)}, shapes=((2, 8),), reps=6,
                                       warmup=0, tolerance=0.5)  # fmt: skip
    assert abs(result[evaluation.CONTROL]["2x8"] - 1) <= 0.5
    assert 0.3 < result["fast"]["2x8"] < 0.8
    assert result["fast"]["2x8_reps"] >= 6
    assert evaluation.control_warning(result[evaluation.CONTROL], tolerance=0.5) is None


def test_a_control_that_stays_off_runs_more_rounds_and_is_reported():
    result = evaluation.latency_ratios(_Sleeper(0.01, slow_every=2), {"m": _Sleeper(0.005)}, shapes=((2, 8),),
                                       reps=4, warmup=0, max_reps=10)  # fmt: skip
    control = result[evaluation.CONTROL]
    assert abs(control["2x8"] - 1) > evaluation.CONTROL_TOLERANCE
    assert control["2x8_reps"] == 10  # kept measuring up to max_reps
    warning = evaluation.control_warning(control)
    assert warning.startswith("Latency not trustworthy: the teacher timed against itself measured")


def test_speedups_from_a_noisy_measurement_are_not_printed_as_numbers():
    assert evaluation.format_speedup(0.25, 1.01) == "4.00x"
    assert evaluation.format_speedup(0.25, 1.86) == "noisy (control 0.54x)"
    records = [{"stage": "teacher", "latency_control_8x128": 1.0, "latency_control_1x128": 1.02},
               {"stage": "int8", "latency_control_8x128": 1.08, "latency_control_1x128": 0.99}]  # fmt: skip
    line = evaluation.control_summary(records)
    assert "teacher 1.00x / 0.98x" in line and "off 1.00x for int8" in line
    assert "all within 5%" in evaluation.control_summary(records[:1])
