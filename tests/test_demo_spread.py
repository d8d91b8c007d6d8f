"""gmmseg.studies.demo_spread (studies/demo_spread.py): reading the tables `make demo` prints and
their spread over runs, on hand-written summaries whose statistics are computed here."""

import statistics

import pytest

from gmmseg.studies import demo_spread

SUMMARY = """metric                 | softmax | gmm
-----------------------+---------+-----
mIoU (val)             | {a}    | {b}
  IoU road             | 90.0    | -
ECE % (val, 15 bins)   | 0.46    | 5.42

AUROC %    | far: softmax | far: gmm | near: softmax | near: gmm
-----------+--------------+----------+---------------+----------
msp        | 85.0         | 81.0     | {c}          | 80.0
likelihood | -            | {d}     | -             | 83.0

FPR95 %    | far: softmax | far: gmm | near: softmax | near: gmm
-----------+--------------+----------+---------------+----------
msp        | 40.0         | 50.0     | 45.0          | 55.0
likelihood | -            | 30.0     | -             | 60.0

Best AUROC of each model (of the scores above):
  far (gmmseg_demo_anomaly): softmax msp 85.0, gmm likelihood 91.0  -> gmm leads by 6.0

GMM network's softmax scores, AUROC % | far: gmm | near: gmm
--------------------------------------+----------+----------
msp                                   | {e}     | 80.0

Does the GMM fit the features? ...
| iteration | known |
|---|---|
| 0 | -59.6 |
"""


def _summary(tmp_path, name, a="68.3", b="67.5", c="84.0", d="91.0", e="81.0"):
    path = tmp_path / name
    path.write_text(SUMMARY.format(a=a, b=b, c=c, d=d, e=e))
    return str(path)


def test_read_table_takes_every_table_names_the_anomaly_rows_by_their_table_and_dashes_as_missing(
    tmp_path,
):
    t = demo_spread.read_table(_summary(tmp_path, "s.txt"))
    assert t == {
        "mIoU (val)": {"softmax": 68.3, "gmm": 67.5},
        "IoU road": {"softmax": 90.0, "gmm": None},
        "ECE % (val, 15 bins)": {"softmax": 0.46, "gmm": 5.42},
        "AUROC % msp": {
            "far: softmax": 85.0,
            "far: gmm": 81.0,
            "near: softmax": 84.0,
            "near: gmm": 80.0,
        },
        "AUROC % likelihood": {
            "far: softmax": None,
            "far: gmm": 91.0,
            "near: softmax": None,
            "near: gmm": 83.0,
        },
        "FPR95 % msp": {
            "far: softmax": 40.0,
            "far: gmm": 50.0,
            "near: softmax": 45.0,
            "near: gmm": 55.0,
        },
        "FPR95 % likelihood": {
            "far: softmax": None,
            "far: gmm": 30.0,
            "near: softmax": None,
            "near: gmm": 60.0,
        },
        "GMM network's softmax scores, AUROC % msp": {"far: gmm": 81.0, "near: gmm": 80.0},
    }


def test_spread_mean_sample_std_and_range_per_row_and_column(tmp_path):
    runs = [
        ("68.0", "60.0", "84.0", "91.0", "70.0"),
        ("69.0", "70.0", "86.5", "89.0", "80.0"),
        ("70.0", "65.0", "85.0", "90.0", "75.0"),
    ]
    tables = [
        demo_spread.read_table(_summary(tmp_path, f"s{i}.txt", *r)) for i, r in enumerate(runs)
    ]
    s = demo_spread.spread(tables)
    assert s["mIoU (val)"]["softmax"]["mean"] == pytest.approx(69.0)
    assert s["mIoU (val)"]["softmax"]["std"] == pytest.approx(1.0)  # sample std of 68, 69, 70
    assert s["mIoU (val)"]["gmm"]["std"] == pytest.approx(statistics.stdev([60.0, 70.0, 65.0]))
    assert (s["mIoU (val)"]["gmm"]["min"], s["mIoU (val)"]["gmm"]["max"]) == (60.0, 70.0)
    assert "gmm" not in s["IoU road"]  # missing in every run
    assert s["AUROC % msp"]["near: softmax"]["values"] == [84.0, 86.5, 85.0]
    assert "far: softmax" not in s["AUROC % likelihood"]
    # AUROC ranges: near softmax msp 2.5, far gmm likelihood 2.0, the others 0; mIoU's 10 is no
    # AUROC, and the GMM network's softmax scores (10) are not in the comparison table
    net = "GMM network's softmax scores, AUROC % msp"
    assert s[net]["far: gmm"]["values"] == [70.0, 80.0, 75.0]
    assert demo_spread.widest_range(s) == pytest.approx((2.5, "AUROC % msp", "near: softmax"))
    md = demo_spread.markdown(s, ["a", "b", "c"])
    assert "Widest AUROC range: 2.50 points (AUROC % msp, near: softmax)" in md
    assert "| mIoU (val) | 69.00 +- 1.00 [68.00, 70.00] | 65.00 +- 5.00 [60.00, 70.00] |" in md
    assert "| IoU road | 90.00 +- 0.00 [90.00, 90.00] | - |" in md
    # the anomaly rows in tables of their own columns, "-" where a model has no such score
    header = "| metric | far: softmax: mean +- std [min, max] | far: gmm: mean +- std [min, max] | "
    assert md.count(header) == 1
    assert (
        "| AUROC % likelihood | - | 90.00 +- 1.00 [89.00, 91.00] | - | 83.00 +- 0.00 [83.00, 83.00] |"
        in md
    )
    lines = md.splitlines()
    at = {
        name: next(i for i, x in enumerate(lines) if x.startswith(name))
        for name in ("| ECE", header, "| AUROC % msp")
    }
    assert at["| ECE"] < at[header] < at["| AUROC % msp"]
