"""benchmarks/seed_study.py: the metrics it keeps from a run's results and its two tables."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import seed_study  # noqa: E402


def _result(miou, bicyclist, auroc):
    return {
        "camvid_val": {
            "sem_seg": {"mIoU": miou, "fwIoU": 80.0, "IoU-road": 90.0, "IoU-bicyclist": bicyclist},
            "calibration": {"ECE": 2.0},
            "anomaly": {"likelihood_AUROC": auroc, "likelihood_energy_AUROC": auroc + 1},
        }
    }


def test_metrics_and_tables_by_hand():
    m = seed_study.metrics_of(_result(50.0, 0.0, 80.0), "camvid_val")
    assert m == {
        "mIoU": 50.0,
        "IoU-road": 90.0,
        "IoU-bicyclist": 0.0,
        "ECE": 2.0,
        "likelihood_AUROC": 80.0,
        "likelihood_energy_AUROC": 81.0,
    }
    study = {"gmm": {1: m, 2: seed_study.metrics_of(_result(54.0, 20.0, 84.0), "camvid_val")}}
    table = seed_study.table(study, "camvid_val").splitlines()
    assert table[0].startswith("| variant | seeds | mIoU | ECE | likelihood_AUROC |")
    assert "likelihood_energy_AUROC" in table[0]  # fitted scores are columns too
    assert table[2].startswith("| gmm | 2 | 52.0 +- 2.8 | 2.0 +- 0.0 | 82.0 +- 2.8 |")
    classes = seed_study.class_table(study).splitlines()
    assert classes[0] == "| variant | road | bicyclist |"
    assert classes[2] == "| gmm | 90.0 +- 0.0 | 10.0 +- 14.1 |"
