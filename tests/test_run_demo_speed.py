"""tools/run_demo.py's training-speed row: a ratio of medians of steps timed in alternating
rounds in one process (steppers and clock faked here; the end-to-end run is in
test_run_demo_tool.py)."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "gmmseg_tools_run_demo_speed", os.path.join(ROOT, "tools", "run_demo.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_steps_alternate_in_rounds_after_a_warm_up():
    tool = _load_tool()
    clock, calls = FakeClock(), []
    durations = {"softmax": iter([9.0] * 2 + [1, 1, 1, 1]), "gmm": iter([9.0] * 2 + [2, 2, 3, 100])}

    def stepper(name):
        def step():
            calls.append(name)
            clock.now += next(durations[name])

        return step

    times = tool.alternating_step_times(
        {"softmax": stepper("softmax"), "gmm": stepper("gmm")},
        rounds=2,
        steps_per_round=2,
        warmup=2,
        clock=clock,
    )
    # 2 untimed warm-up steps each, then rounds of 2 steps of each model in turn
    assert calls == ["softmax"] * 2 + ["gmm"] * 2 + ["softmax", "softmax", "gmm", "gmm"] * 2
    assert times == {"softmax": [1, 1, 1, 1], "gmm": [2, 2, 3, 100]}
    # medians 2.5 and 1 (the mean ratio would be 26.75: one slow step, e.g. the machine busy)
    assert tool.median_ratio(times) == pytest.approx(2.5)


def test_summary_row_is_the_ratio_with_two_decimals():
    tool = _load_tool()
    val, anom = "gmmseg_demo_val", "gmmseg_demo_anomaly"
    res = {
        v: {
            val: {"sem_seg": {"mIoU": 50.0}, "calibration": {"ECE": 1.0}},
            anom: {"anomaly": {}},
            "train_step_ratio": r,
            "ms_per_image": 3.0,
        }
        for v, r in (("softmax", 1.0), ("gmm", 1.2345))
    }
    lines = tool.summary_table(res, []).splitlines()
    row = next(line for line in lines if line.startswith("train step / softmax's"))
    assert [c.strip() for c in row.split(" | ")][1:] == ["1.00", "1.23"]
    assert not any("s/iter" in line for line in lines)
