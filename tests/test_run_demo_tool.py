"""tools/run_demo.py (`make demo`) end to end on a very short schedule: both models trained by
train_net (21 iterations, small images, through the tool's KEY VALUE overrides), evaluated, the
GMM's fit curve measured, and the summary table checked value by value against the files the
evaluators wrote (sem_seg_evaluation.pth, calibration_*.json, anomaly_*.json), the run's
metrics.json and its checkpoints: a table row reading another metric, split, class or model
column than it says fails here.
"""

import contextlib
import importlib.util
import io
import json
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAL, ANOM = "gmmseg_demo_val", "gmmseg_demo_anomaly"
OPTS = [
    "SOLVER.IMS_PER_BATCH",
    "2",
    "INPUT.MIN_SIZE_TRAIN",
    "(48,)",
    "INPUT.MIN_SIZE_TEST",
    "48",
    # 21 iterations, a periodic checkpoint at the last one (model_0000020.pth, which
    # model_final.pth repeats)
    "SOLVER.MAX_ITER",
    "21",
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "21",
    "MODEL.GMM.MEMORY_SIZE",
    "40",
    "MODEL.GMM.UPDATE_INTERVAL",
    "3",
    "MODEL.GMM.PUSH_ROWS",
    "all",
    "TEST.OPEN_WORLD.PLOTS",
    "False",
]
METRICS = ("AUROC", "AP", "FPR95")


def _load_tool():
    spec = importlib.util.spec_from_file_location("gmmseg_tools_run_demo", os.path.join(ROOT, "tools", "run_demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, demo_datasets_root):
    out = tmp_path_factory.mktemp("run_demo") / "demo"
    tool = _load_tool()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", str(demo_datasets_root))
        mp.setenv("OMP_NUM_THREADS", "1")  # the training subprocesses
        mp.setenv("PYTHONWARNINGS", "ignore")
        mp.setattr(sys, "argv", ["run_demo.py", "--output", str(out), *OPTS])
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            tool.main()
    (out / "printed.txt").write_text(printed.getvalue())
    table, _, fit = (out / "summary.txt").read_text().partition("\n\nDoes the GMM fit the features?")
    with open(out / "summary.json") as f:
        summary = json.load(f)
    return tool, out, table, fit, summary


def _parse_table(text):
    lines = text.strip("\n").splitlines()
    header = [c.strip() for c in lines[0].split(" | ")]
    assert header == ["metric", "softmax", "gmm"]
    assert set(lines[1]) <= {"-", "+"}
    rows = {}
    for line in lines[2:]:
        cells = [c.rstrip() for c in line.split(" | ")]  # the class rows are indented: keep it
        assert len(cells) == 3, line
        rows[cells[0]] = {"softmax": cells[1], "gmm": cells[2]}
    return rows


def _files(out, variant):
    """The metrics the evaluators wrote for one model (the tool's evaluate, not train_net: the
    tool trains with DATASETS.TEST ())."""
    inf = out / variant / "inference"
    # detectron2's SemSegEvaluator file holds NumPy scalars: not weights_only; written by this test's run
    sem_seg = torch.load(inf / VAL / "sem_seg_evaluation.pth", weights_only=False)  # {"mIoU": ..., "IoU-sky": ...}
    sem_seg = {k: float(v) for k, v in sem_seg.items()}
    with open(inf / VAL / f"calibration_{VAL}.json") as f:
        calibration = json.load(f)
    with open(inf / ANOM / f"anomaly_{ANOM}.json") as f:
        anomaly = json.load(f)
    return sem_seg, calibration, anomaly


def _scores(out):
    """The anomaly scores the evaluator computed (the GMM model's file: all of them, the model's own
    scores first: "likelihood", "marginal")."""
    scores = list(_files(out, "gmm")[2]["scores"])
    assert scores[:2] == ["likelihood", "marginal"] and {"msp", "entropy", "max_logit"} <= set(scores)
    return scores


def test_summary_table_shows_the_evaluators_numbers(demo_run):
    from gmmseg.data.demo import DEMO_CLASSES

    _, out, table, _, _ = demo_run
    rows = _parse_table(table)
    scores = _scores(out)
    expected = {}  # row name -> {variant: cell}, built from the files, independently of the tool
    for variant in ("softmax", "gmm"):
        sem_seg, calibration, anomaly = _files(out, variant)
        assert calibration["dataset"] == VAL and anomaly["dataset"] == ANOM
        assert anomaly["model"].startswith("GMMSeg" if variant == "gmm" else "Softmax")
        cells = {"mIoU (val)": f"{sem_seg['mIoU']:.1f}", "ECE % (val, 15 bins)": f"{calibration['ECE']:.2f}"}
        for c in DEMO_CLASSES:
            cells[f"  IoU {c}"] = f"{sem_seg[f'IoU-{c}']:.1f}"
        for s in scores:  # every score the evaluator computed has its rows
            for m in METRICS:
                v = anomaly["scores"].get(s, {}).get(m)
                cells[f"{m} {s} (anomaly)"] = "-" if v is None else f"{v:.1f}"
        for name, cell in cells.items():
            expected.setdefault(name, {})[variant] = cell
    for name, cells in expected.items():
        assert rows[name] == cells, f"row {name!r}: table {rows[name]}, evaluator files {cells}"
    assert list(rows)[: 1 + len(DEMO_CLASSES)] == ["mIoU (val)"] + [f"  IoU {c}" for c in DEMO_CLASSES]
    assert set(rows) == set(expected) | {"train step / softmax's", "inference ms/image"}

    # the run is informative enough to catch a swapped column or a row reading another class
    assert rows["mIoU (val)"]["softmax"] != rows["mIoU (val)"]["gmm"]
    assert len({rows[f"  IoU {c}"]["gmm"] for c in DEMO_CLASSES}) >= 3
    assert rows["AUROC likelihood (anomaly)"]["softmax"] == "-" and rows["AUROC likelihood (anomaly)"]["gmm"] != "-"


def test_summary_json_holds_the_evaluators_numbers_unrounded(demo_run):
    _, out, _, _, summary = demo_run
    for variant in ("softmax", "gmm"):
        sem_seg, calibration, anomaly = _files(out, variant)
        res = summary[variant]
        assert res[VAL]["sem_seg"] == pytest.approx(sem_seg, rel=1e-12)
        assert res[VAL]["calibration"]["ECE"] == pytest.approx(calibration["ECE"], rel=1e-12)
        for s in _scores(out):
            for m in METRICS:
                if s in anomaly["scores"]:
                    assert res[ANOM]["anomaly"][f"{s}_{m}"] == pytest.approx(anomaly["scores"][s][m], rel=1e-12)
                else:
                    assert f"{s}_{m}" not in res[ANOM]["anomaly"]


def test_speed_rows(demo_run):
    tool, out, table, _, summary = demo_run
    rows = _parse_table(table)
    # training speed: the ratio of the medians of steps timed in the tool's own process
    speed = summary["train_speed"]
    assert speed["steps"] == tool.SPEED_ROUNDS * tool.SPEED_STEPS_PER_ROUND
    assert speed["median_s"]["softmax"] > 0 and speed["median_s"]["gmm"] > 0
    ratio = speed["median_s"]["gmm"] / speed["median_s"]["softmax"]
    assert speed["gmm_over_softmax"] == pytest.approx(ratio, rel=1e-12)
    assert rows["train step / softmax's"] == {"softmax": "1.00", "gmm": f"{ratio:.2f}"}
    for variant in ("softmax", "gmm"):
        assert summary[variant]["ms_per_image"] > 0
        assert rows["inference ms/image"][variant] == f"{summary[variant]['ms_per_image']:.1f}"
        # trained with the overrides given to the tool: 21 iterations
        ckpt = torch.load(out / variant / "model_final.pth", map_location="cpu", weights_only=True)
        assert ckpt["iteration"] == 20


def test_fit_curve_rows_follow_the_checkpoints_of_the_gmm_run(demo_run):
    from gmmseg.analysis.gmm_fit import fit_curve_table

    _, out, _, fit, summary = demo_run
    curve = summary["gmm_fit_curve"]
    # model_final.pth repeats model_0000020.pth (both after iteration 20): one row for it
    assert [(r["iteration"], r["checkpoint"]) for r in curve] == [(0, "(initialisation)"), (21, "model_0000020.pth")]
    assert fit.rstrip("\n").endswith(fit_curve_table(curve))
    lines = fit_curve_table(curve).splitlines()
    assert lines[2].startswith("| 0 | ") and lines[3].startswith("| 21 | ")
    # values from the models themselves: unit stds at initialisation, the checkpoint's stds after
    stds = torch.load(out / "gmm" / "model_0000020.pth", map_location="cpu", weights_only=True)["model"][
        "sem_seg_head.predictor.stds"
    ]
    assert curve[0]["mean_std"] == pytest.approx(1.0, abs=1e-7)
    assert curve[1]["mean_std"] == pytest.approx(float(stds.mean()), rel=1e-6)
    assert curve[1]["mean_std"] < 0.9
    for r in curve:
        assert r["known_best_class_ll"] >= r["known_own_class_ll"]  # a max over classes includes the own one
    # EM raised the likelihood of the known pixels from its value at initialisation
    assert curve[1]["known_own_class_ll"] > curve[0]["known_own_class_ll"]


def test_summary_table_of_a_hand_made_result(demo_run):
    """summary_table on results written here: every row reads its own number (distinct values, so
    a row reading a neighbour's key shows), missing entries are '-'."""
    tool, out = demo_run[:2]
    classes = ["a", "b"]
    scores = _scores(out)

    def result(base):
        sem_seg = {"mIoU": base + 0.11, "IoU-a": base + 1.22, "IoU-b": base + 2.33}
        anomaly = {f"{s}_{m}": base + 10 * i + j + 0.44 for i, s in enumerate(scores) for j, m in enumerate(METRICS)}
        return {
            VAL: {"sem_seg": sem_seg, "calibration": {"ECE": base + 0.5551}},
            ANOM: {"anomaly": anomaly},
            "train_step_ratio": base / 1000 + 0.1234,
            "ms_per_image": base + 0.66,
        }

    res = {"softmax": result(100), "gmm": result(200)}
    for m in METRICS:
        del res["softmax"][ANOM]["anomaly"][f"likelihood_{m}"]
    rows = _parse_table(tool.summary_table(res, classes))
    assert rows["mIoU (val)"] == {"softmax": "100.1", "gmm": "200.1"}
    assert rows["  IoU a"] == {"softmax": "101.2", "gmm": "201.2"}
    assert rows["  IoU b"] == {"softmax": "102.3", "gmm": "202.3"}
    assert rows["ECE % (val, 15 bins)"] == {"softmax": "100.56", "gmm": "200.56"}  # 100.5551 -> 2 digits
    for i, s in enumerate(scores):
        for j, m in enumerate(METRICS):
            want = {v: f"{base + 10 * i + j + 0.44:.1f}" for v, base in (("softmax", 100), ("gmm", 200))}
            if s == "likelihood":
                want["softmax"] = "-"
            assert rows[f"{m} {s} (anomaly)"] == want
    assert rows["train step / softmax's"] == {"softmax": "0.22", "gmm": "0.32"}
    assert rows["inference ms/image"] == {"softmax": "100.7", "gmm": "200.7"}


def test_progress_while_training_and_total_time(demo_run):
    """`make demo` prints, per model, iteration / loss / ETA lines while it trains (detectron2
    writes metrics.json at iterations 20 and 21 here) and the total time at the end."""
    _, out, _, _, _ = demo_run
    printed = (out / "printed.txt").read_text().splitlines()
    for variant in ("softmax", "gmm"):
        lines = [line for line in printed if line.startswith(f"[demo] {variant}: iter ")]
        assert lines and lines[-1].startswith(f"[demo] {variant}: iter 21/21  loss "), lines
        assert all(" eta " in line for line in lines)
    assert printed[-1].startswith("[demo] total ")


def test_metric_records_are_read_line_by_line_as_they_are_appended(tmp_path):
    tool = _load_tool()
    path = tmp_path / "metrics.json"
    assert tool.new_metric_records(str(path), 0) == ([], 0)
    first = {"iteration": 19, "total_loss": 1.25, "eta_seconds": 83.4}
    path.write_text(json.dumps(first) + "\n" + '{"iteration": 39, "total_lo')  # the second line half written
    records, offset = tool.new_metric_records(str(path), 0)
    assert records == [first] and offset == len(json.dumps(first)) + 1
    with open(path, "a") as f:
        f.write('ss": 0.5}\n')
    records, offset = tool.new_metric_records(str(path), offset)
    assert records == [{"iteration": 39, "total_loss": 0.5}] and offset == path.stat().st_size
    assert tool.progress_line("gmm", first, 400, 12.3) == "[demo] gmm: iter 20/400  loss 1.250  eta 0:01:23  (12 s)"
