"""tools/run_demo.py (`make demo`) end to end on a very short schedule: both models trained by
train_net (21 iterations, small images, through the tool's KEY VALUE overrides), their scores
fitted on the training split, evaluated on val, far and near anomalies, the anomaly maps drawn,
the GMM's fit curve measured, and the summary tables checked value by value against the files the
evaluators wrote (sem_seg_evaluation.pth, calibration_*.json, anomaly_*.json), the run's
metrics.json and its checkpoints: a table row or column reading another metric, split, class,
score or model than it says fails here.
"""

import contextlib
import importlib.util
import io
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAL = "gmmseg_demo_val"
SPLITS = {"far": "gmmseg_demo_anomaly", "near": "gmmseg_demo_near"}
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
TABLE_METRICS = ("AUROC", "FPR95")
INFERNO_LOW, INFERNO_HIGH = (
    (0, 0, 4),
    (252, 255, 164),
)  # the first and last colours of the figures' colour map


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "gmmseg_tools_run_demo", os.path.join(ROOT, "tools", "run_demo.py")
    )
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
    tables, _, fit = (
        (out / "summary.txt").read_text().partition("\n\nDoes the GMM fit the features?")
    )
    with open(out / "summary.json") as f:
        summary = json.load(f)
    return tool, out, tables, fit, summary


def _parse_table(text, corner="metric"):
    lines = text.strip("\n").splitlines()
    header = [c.strip() for c in lines[0].split(" | ")]
    assert header[0] == corner
    assert set(lines[1]) <= {"-", "+"}
    rows = {}
    for line in lines[2:]:
        cells = [c.rstrip() for c in line.split(" | ")]  # the class rows are indented: keep it
        assert len(cells) == len(header), line
        rows[cells[0]] = dict(zip(header[1:], cells[1:]))
    return rows


def _blocks(tables):
    """The summary's parts before the fit curve: the segmentation table, one anomaly table per
    metric of TABLE_METRICS, the best-score lines, the GMM network's softmax scores."""
    blocks = tables.split("\n\n")
    assert len(blocks) == 3 + len(TABLE_METRICS), blocks
    return blocks


def _softmax_only(score):
    """A score of the softmax family (reads the logits only), written out here: the comparison
    shows these for the twin only; the GMM network's have their own table."""
    from gmmseg.scores import FITTED, SCORES

    bases = FITTED[score].bases if score in FITTED else (score,)
    return all(SCORES[b].needs == ("logits",) for b in bases)


def _files(out, variant):
    """The metrics the evaluators wrote for one model (the tool's evaluate, not train_net: the
    tool trains with DATASETS.TEST ()): sem_seg, calibration, {split: anomaly file}."""
    inf = out / variant / "inference"
    # detectron2's SemSegEvaluator file holds NumPy scalars: not weights_only; written by this test's run
    sem_seg = torch.load(
        inf / VAL / "sem_seg_evaluation.pth", weights_only=False
    )  # {"mIoU": ..., "IoU-sky": ...}
    sem_seg = {k: float(v) for k, v in sem_seg.items()}
    with open(inf / VAL / f"calibration_{VAL}.json") as f:
        calibration = json.load(f)
    anomaly = {}
    for split, ds in SPLITS.items():
        with open(inf / ds / f"anomaly_{ds}.json") as f:
            anomaly[split] = json.load(f)
    return sem_seg, calibration, anomaly


def _scores(out):
    """The anomaly scores the evaluator computed (the GMM model's file: all of them, the model's own
    scores first: "likelihood", "marginal"; the fitted ones with them)."""
    scores = list(_files(out, "gmm")[2]["far"]["scores"])
    assert scores[:2] == ["likelihood", "marginal"] and {"msp", "entropy", "max_logit"} <= set(
        scores
    )
    assert {"likelihood_std", "max_logit_std", "likelihood_energy"} <= set(
        scores
    )  # fitted on the training split
    return scores


def test_summary_tables_show_the_evaluators_numbers(demo_run):
    from gmmseg.data.demo import DEMO_CLASSES
    from gmmseg.scores import score_labels

    tool, out, tables, _, _ = demo_run
    blocks = _blocks(tables)
    rows = _parse_table(blocks[0])
    scores = _scores(out)
    expected = {}  # row name -> {variant: cell}, built from the files, independently of the tool
    anomaly_expected = {
        m: {} for m in TABLE_METRICS
    }  # metric -> score -> {"<split>: <variant>": cell}
    network_expected = {}  # the GMM network's softmax scores: score -> {"<split>: gmm": AUROC cell}
    for variant in ("softmax", "gmm"):
        sem_seg, calibration, anomaly = _files(out, variant)
        assert calibration["dataset"] == VAL
        cells = {
            "mIoU (val)": f"{sem_seg['mIoU']:.1f}",
            "ECE % (val, 15 bins)": f"{calibration['ECE']:.2f}",
        }
        for c in DEMO_CLASSES:
            cells[f"  IoU {c}"] = f"{sem_seg[f'IoU-{c}']:.1f}"
        for name, cell in cells.items():
            expected.setdefault(name, {})[variant] = cell
        for split, ds in SPLITS.items():
            assert anomaly[split]["dataset"] == ds
            assert anomaly[split]["model"].startswith("GMMSeg" if variant == "gmm" else "Softmax")
            for s in scores:  # every score the evaluator computed has its row
                shown = variant == "softmax" or not _softmax_only(s)
                for m in TABLE_METRICS:
                    v = anomaly[split]["scores"].get(s, {}).get(m)
                    anomaly_expected[m].setdefault(s, {})[f"{split}: {variant}"] = (
                        "-" if v is None or not shown else f"{v:.1f}"
                    )
                if not shown:
                    v = anomaly[split]["scores"][s]["AUROC"]
                    network_expected.setdefault(s, {})[f"{split}: gmm"] = f"{v:.1f}"
    for name, cells in expected.items():
        assert rows[name] == cells, f"row {name!r}: table {rows[name]}, evaluator files {cells}"
    assert list(rows)[: 1 + len(DEMO_CLASSES)] == ["mIoU (val)"] + [
        f"  IoU {c}" for c in DEMO_CLASSES
    ]
    assert set(rows) == set(expected) | {"train step / softmax's", "inference ms/image"}
    for m, block in zip(TABLE_METRICS, blocks[1:]):
        table = _parse_table(block, corner=f"{m} %")
        assert table == anomaly_expected[m], m
        assert list(table) == [s for s in score_labels() if s in table]  # the score table's order
    network = _parse_table(blocks[-1], corner=tool.NETWORK_SOFTMAX_CORNER)
    assert network == network_expected
    assert {"msp", "energy", "max_logit_std"} <= set(network)

    # the run is informative enough to catch a swapped column or a row reading another class
    assert rows["mIoU (val)"]["softmax"] != rows["mIoU (val)"]["gmm"]
    assert len({rows[f"  IoU {c}"]["gmm"] for c in DEMO_CLASSES}) >= 3
    auroc = _parse_table(blocks[1], corner="AUROC %")
    assert auroc["likelihood"]["far: softmax"] == "-" and auroc["likelihood"]["far: gmm"] != "-"
    assert auroc["msp"]["far: gmm"] == "-" and auroc["msp"]["far: softmax"] != "-"
    assert auroc["likelihood_energy"]["far: gmm"] != auroc["likelihood_energy"]["near: gmm"]
    assert network["msp"]["far: gmm"] != network["msp"]["near: gmm"]


def test_best_lines_name_each_models_best_auroc(demo_run):
    _, out, tables, _, _ = demo_run
    lines = _blocks(tables)[-2].splitlines()
    assert lines[0] == "Best AUROC of each model (of the scores above):"
    for line, (split, ds) in zip(lines[1:], SPLITS.items()):
        best = {}
        for variant in ("softmax", "gmm"):
            scores = _files(out, variant)[2][split]["scores"]
            if variant == "gmm":  # the compared ones: the density's
                scores = {s: v for s, v in scores.items() if not _softmax_only(s)}
            name = max(scores, key=lambda s: scores[s]["AUROC"])
            best[variant] = (name, scores[name]["AUROC"])
        lead = max(best, key=lambda v: best[v][1])
        gap = best[lead][1] - min(b[1] for b in best.values())
        want = f"  {split} ({ds}): softmax {best['softmax'][0]} {best['softmax'][1]:.1f}, "
        want += f"gmm {best['gmm'][0]} {best['gmm'][1]:.1f}  -> {lead} leads by {gap:.1f}"
        assert line == want


def test_score_fits_read_the_training_split(demo_run):
    _, out, _, _, _ = demo_run
    for variant in ("softmax", "gmm"):
        with open(out / variant / "score_fit.json") as f:
            fit = json.load(f)
        assert fit["dataset"] == "gmmseg_demo_train" and fit["weights"].endswith(
            f"{variant}/model_final.pth"
        )
        assert "max_logit_std" in fit["fitted_scores"]


def test_figures_of_both_anomaly_splits(demo_run):
    tool, out, _, _, _ = demo_run
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert names == [
        f"{s}_{n}.png" for s in ("far", "near") for n in range(1, tool.FIGURES_PER_SPLIT + 1)
    ]
    printed = (out / "printed.txt").read_text()
    assert (
        "[demo] anomaly maps: figures/far_1.png, figures/far_2.png, figures/near_1.png" in printed
    )


def test_figures_pair_each_image_with_its_own_maps(demo_run, tmp_path):
    """write_figures on maps made here: the GMM column gets each image's anomaly mask as its score
    (known pixels 0: the range's low end, anomalies far above its high end), the twin's column the
    negated mask; an anomaly pixel of every image shown must then be bright in the GMM column and
    dark in the twin's, in the right row of the right figure."""
    from detectron2.data import DatasetCatalog
    from scipy import ndimage

    from gmmseg.data.mapper import anomaly_mask_of
    from gmmseg.evaluation import anomaly_figures as af

    tool = demo_run[0]
    figure_maps, res, masks = {"gmm": {}, "softmax": {}}, {"gmm": {}, "softmax": {}}, {}
    for split, ds in SPLITS.items():
        masks[split] = [anomaly_mask_of(d) for d in DatasetCatalog.get(ds)]
        gmm_maps = [(m == 1).astype(np.float32) * 10 for m in masks[split]]
        figure_maps["gmm"][split] = ("likelihood", gmm_maps)
        figure_maps["softmax"][split] = ("energy", [-x for x in gmm_maps])
        for v, name in (("gmm", "likelihood"), ("softmax", "energy")):
            res[v][ds] = {"anomaly": {f"{name}_AUROC": 50.0}}
    paths = tool.write_figures(str(tmp_path), figure_maps, res)
    assert [os.path.basename(p) for p in paths] == [
        "far_1.png",
        "far_2.png",
        "near_1.png",
        "near_2.png",
    ]
    per = tool.IMAGES_PER_FIGURE
    for path in paths:
        split, n = os.path.basename(path)[:-4].split("_")
        with Image.open(path) as im:
            png = np.asarray(im.convert("RGB")).astype(int)
        for row in range(per):
            mask = masks[split][(int(n) - 1) * per + row]
            layout = af.figure_layout(*mask.shape, rows=per, columns=4)
            ys, xs = np.nonzero(
                ndimage.binary_erosion(mask == 1, iterations=2)
            )  # away from the edges
            y, x = ys[len(ys) // 2] * af.SCALE + 1, xs[len(xs) // 2] * af.SCALE + 1
            for column, colour in ((2, INFERNO_HIGH), (3, INFERNO_LOW)):
                oy, ox = layout["origin"][row][column]
                assert np.abs(png[oy + y, ox + x] - colour).max() <= 2, (path, row, column)


def test_summary_json_holds_the_evaluators_numbers_unrounded(demo_run):
    _, out, _, _, summary = demo_run
    for variant in ("softmax", "gmm"):
        sem_seg, calibration, anomaly = _files(out, variant)
        res = summary[variant]
        assert res[VAL]["sem_seg"] == pytest.approx(sem_seg, rel=1e-12)
        assert res[VAL]["calibration"]["ECE"] == pytest.approx(calibration["ECE"], rel=1e-12)
        for split, ds in SPLITS.items():
            for s in _scores(out):
                for m in METRICS:
                    if s in anomaly[split]["scores"]:
                        want = anomaly[split]["scores"][s][m]
                        assert res[ds]["anomaly"][f"{s}_{m}"] == pytest.approx(want, rel=1e-12)
                    else:
                        assert f"{s}_{m}" not in res[ds]["anomaly"]


def test_speed_rows(demo_run):
    tool, out, tables, _, summary = demo_run
    rows = _parse_table(_blocks(tables)[0])
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
    assert [(r["iteration"], r["checkpoint"]) for r in curve] == [
        (0, "(initialisation)"),
        (21, "model_0000020.pth"),
    ]
    assert fit.rstrip("\n").endswith(fit_curve_table(curve))
    lines = fit_curve_table(curve).splitlines()
    assert lines[2].startswith("| 0 | ") and lines[3].startswith("| 21 | ")
    # values from the models themselves: unit stds at initialisation, the checkpoint's stds after
    stds = torch.load(out / "gmm" / "model_0000020.pth", map_location="cpu", weights_only=True)[
        "model"
    ]["sem_seg_head.predictor.stds"]
    assert curve[0]["mean_std"] == pytest.approx(1.0, abs=1e-7)
    assert curve[1]["mean_std"] == pytest.approx(float(stds.mean()), rel=1e-6)
    assert curve[1]["mean_std"] < 0.9
    for r in curve:
        assert (
            r["known_best_class_ll"] >= r["known_own_class_ll"]
        )  # a max over classes includes the own one
    # EM raised the likelihood of the known pixels from its value at initialisation
    assert curve[1]["known_own_class_ll"] > curve[0]["known_own_class_ll"]


def test_summary_tables_of_a_hand_made_result(demo_run):
    """summary_table, anomaly_table and best_lines on results written here: every cell reads its
    own number (distinct values, so a cell reading a neighbour's key shows), missing entries are '-'."""
    tool, out = demo_run[:2]
    from gmmseg.scores import score_labels

    classes = ["a", "b"]
    scores = _scores(out)

    def result(base):
        sem_seg = {"mIoU": base + 0.11, "IoU-a": base + 1.22, "IoU-b": base + 2.33}
        r = {
            VAL: {"sem_seg": sem_seg, "calibration": {"ECE": base + 0.5551}},
            "train_step_ratio": base / 1000 + 0.1234,
            "ms_per_image": base + 0.66,
        }
        for k, ds in enumerate(SPLITS.values()):
            r[ds] = {
                "anomaly": {
                    f"{s}_{m}": base + 1000 * k + 10 * i + j + 0.44
                    for i, s in enumerate(scores)
                    for j, m in enumerate(METRICS)
                }
            }
        return r

    res = {"softmax": result(100), "gmm": result(200)}
    for ds in SPLITS.values():
        for m in METRICS:
            del res["softmax"][ds]["anomaly"][f"likelihood_{m}"]
    rows = _parse_table(tool.summary_table(res, classes))
    assert rows["mIoU (val)"] == {"softmax": "100.1", "gmm": "200.1"}
    assert rows["  IoU a"] == {"softmax": "101.2", "gmm": "201.2"}
    assert rows["  IoU b"] == {"softmax": "102.3", "gmm": "202.3"}
    assert rows["ECE % (val, 15 bins)"] == {
        "softmax": "100.56",
        "gmm": "200.56",
    }  # 100.5551 -> 2 digits
    assert rows["train step / softmax's"] == {"softmax": "0.22", "gmm": "0.32"}
    assert rows["inference ms/image"] == {"softmax": "100.7", "gmm": "200.7"}
    for j, m in enumerate(METRICS):
        if m not in TABLE_METRICS:
            continue
        table = _parse_table(tool.anomaly_table(res, m), corner=f"{m} %")
        for i, s in enumerate(scores):
            want = {
                f"{split}: {v}": f"{base + 1000 * k + 10 * i + j + 0.44:.1f}"
                for k, split in enumerate(SPLITS)
                for v, base in (("softmax", 100), ("gmm", 200))
            }
            if s == "likelihood":
                want["far: softmax"] = want["near: softmax"] = "-"
            if _softmax_only(s):  # the GMM network's softmax scores: not compared
                want["far: gmm"] = want["near: gmm"] = "-"
            assert table[s] == want, (m, s)
    network = _parse_table(tool.network_softmax_table(res), corner=tool.NETWORK_SOFTMAX_CORNER)
    # in the score table's order
    assert list(network) == [s for s in score_labels() if s in scores and _softmax_only(s)]
    for i, s in enumerate(scores):
        if _softmax_only(s):
            assert network[s] == {
                f"{split}: gmm": f"{200 + 1000 * k + 10 * i + 0.44:.1f}"
                for k, split in enumerate(SPLITS)
            }
    # each model's best is its last score of the list that it is compared on (values grow with
    # the index): the twin's last score; the GMM's last density score
    best = {}
    for v, base in (("softmax", 100), ("gmm", 200)):
        i = max(i for i, s in enumerate(scores) if v == "softmax" or not _softmax_only(s))
        best[v] = (scores[i], [base + 1000 * k + 10 * i + 0.44 for k in range(2)])
    lines = []
    for k, (split, ds) in enumerate(SPLITS.items()):
        (s_name, s_val), (g_name, g_val) = ((best[v][0], best[v][1][k]) for v in ("softmax", "gmm"))
        lead = "gmm" if g_val > s_val else "softmax"
        lines.append(
            f"  {split} ({ds}): softmax {s_name} {s_val:.1f}, gmm {g_name} {g_val:.1f}  -> "
            f"{lead} leads by {abs(g_val - s_val):.1f}"
        )
    assert tool.best_lines(res).splitlines()[1:] == lines
    assert best["gmm"][0] != best["softmax"][0]  # the GMM's best is not its network's softmax score
    assert tool.best_score({"a_AUROC": 70.0, "b_AUROC": 90.0, "b_FPR95": 5.0, "c_AUROC": 80.0}) == (
        "b",
        90.0,
    )


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
    path.write_text(
        json.dumps(first) + "\n" + '{"iteration": 39, "total_lo'
    )  # the second line half written
    records, offset = tool.new_metric_records(str(path), 0)
    assert records == [first] and offset == len(json.dumps(first)) + 1
    with open(path, "a") as f:
        f.write('ss": 0.5}\n')
    records, offset = tool.new_metric_records(str(path), offset)
    assert records == [{"iteration": 39, "total_loss": 0.5}] and offset == path.stat().st_size
    assert (
        tool.progress_line("gmm", first, 400, 12.3)
        == "[demo] gmm: iter 20/400  loss 1.250  eta 0:01:23  (12 s)"
    )
