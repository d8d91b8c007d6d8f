"""gmmseg.studies.tables (studies/seed_study.py and the other studies): the metrics it keeps from
a run's results and its tables, on results written here."""

import numpy as np

from gmmseg.studies import tables


def _result(miou, bicyclist, auroc):
    return {
        "camvid_val": {
            "sem_seg": {"mIoU": miou, "fwIoU": 80.0, "IoU-road": 90.0, "IoU-bicyclist": bicyclist},
            "calibration": {"ECE": 2.0},
            "anomaly": {"likelihood_AUROC": auroc, "likelihood_energy_AUROC": auroc + 1},
        }
    }


def test_metrics_and_tables_by_hand():
    m = tables.metrics_of(_result(50.0, 0.0, 80.0), "camvid_val")
    assert m == {
        "mIoU": 50.0,
        "IoU-road": 90.0,
        "IoU-bicyclist": 0.0,
        "ECE": 2.0,
        "likelihood_AUROC": 80.0,
        "likelihood_energy_AUROC": 81.0,
    }
    study = {"gmm": {1: m, 2: tables.metrics_of(_result(54.0, 20.0, 84.0), "camvid_val")}}
    rows = tables.table(study).splitlines()
    assert rows[0].startswith("| variant | seeds | mIoU | ECE | likelihood_AUROC |")
    assert "likelihood_energy_AUROC" in rows[0]  # fitted scores are columns too
    assert rows[2].startswith("| gmm | 2 | 52.0 +- 2.8 | 2.0 +- 0.0 | 82.0 +- 2.8 |")
    classes = tables.class_table(study).splitlines()
    assert classes[0] == "| variant | road | bicyclist |"
    assert classes[2] == "| gmm | 90.0 +- 0.0 | 10.0 +- 14.1 |"


def test_score_table_mean_and_sample_std_over_runs():
    # two runs: likelihood AUROC 80 and 84 -> 82.0 +- 2.8 (sample std sqrt(8)); entries without
    # AUROC (counts, the best score's name) are not candidates
    reports = {
        "run1": {
            "likelihood": {"AUROC": 80.0, "AP": 10.0, "FPR95": 50.0},
            "anomalies": 7,
            "best": "likelihood",
        },
        "run2": {
            "likelihood": {"AUROC": 84.0, "AP": 12.0, "FPR95": 40.0},
            "anomalies": 7,
            "best": "likelihood",
        },
    }
    assert tables.score_table(reports).splitlines() == [
        "| score | AUROC | AP | FPR95 |",
        "|---|---|---|---|",
        "| likelihood | 82.0 +- 2.8 | 11.0 +- 1.4 | 45.0 +- 7.1 |",
    ]


def test_settings_table_one_row_per_variant_nan_where_missing():
    results = {
        "release": {
            "opts": "",
            "val": {"sem_seg": {"mIoU": 61.25}, "calibration": {"ECE": 3.456}},
            "anomaly": {"anomaly": {"likelihood_AUROC": 90.04, "msp_AUROC": 70.0}},
        }
    }
    row = tables.settings_table(results, closed="val", anomaly="anomaly").splitlines()[2]
    assert row == "| release |  | 61.2 | 3.46 | 90.0 | nan | nan | nan | nan | 70.0 | nan |"


def test_score_centring_by_hand():
    from _scripts import load_script

    centred = load_script("studies/score_centring_study.py").centred
    m = np.array([1.0, 2.0, 3.0, 10.0])
    np.testing.assert_allclose(centred(m, "raw"), m)
    np.testing.assert_allclose(centred(m, "median"), m - 2.5)
    np.testing.assert_allclose(centred(m, "mean"), m - 4.0)
    # MAD: |m - 2.5| = 1.5, 0.5, 0.5, 7.5 -> median 1.0
    np.testing.assert_allclose(centred(m, "robust"), (m - 2.5) / (1.0 + 1e-6))
