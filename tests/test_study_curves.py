"""gmmseg.studies.curves and curve_report (studies/curve_study.py) on run folders written here:
which checkpoints are evaluated and in which order (--eval-at), the mean +- sample std over the
seeds, the tables, and the training command a run gets."""

import json
import os

import pytest

from gmmseg.studies import curve_report, curves, runs


def _run(tmp_path, variant, seed, iterations=(), evaluated=()):
    """A curve run with the periodic checkpoints model_<i - 1>.pth and results.json files
    {dataset: {"sem_seg": {"mIoU": value}}} at (iteration, dataset, value) of `evaluated`."""
    run = curves.Run(
        str(tmp_path), variant, "configs/demo/fpn_r18_gmm.yaml", "MODEL.GMM.MEMORY_SIZE 10", seed
    )
    os.makedirs(run.dir, exist_ok=True)
    for i in iterations:
        open(os.path.join(run.dir, f"model_{i - 1:07d}.pth"), "w").close()
    open(
        os.path.join(run.dir, "model_0000004.pth"), "w"
    ).close()  # not a multiple of the period: ignored
    for i, dataset, miou in evaluated:
        path = run.result_path(i, dataset)
        os.makedirs(os.path.dirname(path))
        with open(path, "w") as f:
            json.dump({dataset: {"sem_seg": {"mIoU": miou}}}, f)
    return run


def test_run_folder_overrides_and_checkpoints(tmp_path):
    run = _run(tmp_path, "gmm", 3, iterations=(10, 20))
    assert run.dir == os.path.join(str(tmp_path), "gmm", "seed3") and str(run) == "gmm/seed3"
    assert run.opts == ["MODEL.GMM.MEMORY_SIZE", "10", "SEED", "3", "MODEL.GMM.SEED", "3"]
    assert os.path.isabs(run.config) and run.config.endswith(
        os.path.join("configs", "demo", "fpn_r18_gmm.yaml")
    )
    assert run.checkpoints(10) == {
        i: os.path.join(run.dir, f"model_{i - 1:07d}.pth") for i in (10, 20)
    }


def test_pending_evaluations_earliest_first_without_the_done_ones(tmp_path):
    a = _run(tmp_path, "a", 1, iterations=(10, 20), evaluated=[(10, "val", 50.0)])
    b = _run(tmp_path, "b", 1, iterations=(10,))
    todo = [
        (i, str(run), d) for i, run, _, d in curves.pending_evaluations([a, b], 10, ["val", "far"])
    ]
    assert todo == [
        (10, "a/seed1", "far"),
        (10, "b/seed1", "val"),
        (10, "b/seed1", "far"),
        (20, "a/seed1", "val"),
        (20, "a/seed1", "far"),
    ]
    only_20 = curves.pending_evaluations([a, b], 10, ["val"], eval_at={20})
    assert [(i, str(run), d) for i, run, _, d in only_20] == [(20, "a/seed1", "val")]


def test_summary_and_tables_by_hand(tmp_path):
    # variant "gmm": seed 1 mIoU 50 at 10 and 60 at 20, seed 2 mIoU 54 at 10 only:
    # iteration 10 -> mean 52, sample std sqrt(8) = 2.83, n 2; iteration 20 -> 60 +- 0.0 (1)
    runs_ = [
        _run(tmp_path, "gmm", 1, (10, 20), [(10, "val", 50.0), (20, "val", 60.0)]),
        _run(tmp_path, "gmm", 2, (10,), [(10, "val", 54.0)]),
    ]
    data = curve_report.collect(runs_, ["val"])
    assert data == {
        "val": {"gmm": {1: {10: {"mIoU": 50.0}, 20: {"mIoU": 60.0}}, 2: {10: {"mIoU": 54.0}}}}
    }
    summary = curve_report.summarise(data["val"]["gmm"])
    assert summary[10]["mIoU"] == pytest.approx([52.0, 8**0.5, 2])
    assert summary[20]["mIoU"] == [60.0, 0.0, 1]
    assert curve_report.tables("val", {"gmm": summary}).splitlines() == [
        "### val: mIoU",
        "",
        "| iteration | gmm mIoU |",
        "|---|---|",
        "| 10 | 52.0 +- 2.8 (2) |",
        "| 20 | 60.0 +- 0.0 (1) |",
    ]


def test_train_command_resumes_and_lets_the_study_settings_win(tmp_path):
    out = str(tmp_path / "run")
    cmd = runs.train_command("c.yaml", out, ["OUTPUT_DIR", "elsewhere"], ["SOLVER.MAX_ITER", "9"])
    assert cmd[1].endswith(os.path.join("tools", "train_net.py"))
    assert cmd[2:] == [
        "--config-file",
        "c.yaml",
        "OUTPUT_DIR",
        "elsewhere",
        "OUTPUT_DIR",
        out,
        "DATASETS.TEST",
        "()",
        "SOLVER.MAX_ITER",
        "9",
    ]
    os.makedirs(out)
    open(os.path.join(out, "last_checkpoint"), "w").close()
    assert runs.train_command("c.yaml", out, [])[2:5] == ["--config-file", "c.yaml", "--resume"]
