"""gmmseg.studies.demo_spread (studies/demo_spread.py): reading the table `make demo` prints and its spread over runs, on
hand-written tables whose statistics are computed here."""

import statistics

import pytest

from gmmseg.studies import demo_spread

TABLE = """metric                 | softmax | gmm
-----------------------+---------+-----
mIoU (val)             | {a}    | {b}
  IoU road             | 90.0    | -
ECE % (val, 15 bins)   | 0.46    | 5.42

Does the GMM fit the features? ...
| iteration | known |
|---|---|
| 0 | -59.6 |
"""


def _summary(tmp_path, name, a, b):
    path = tmp_path / name
    path.write_text(TABLE.format(a=a, b=b))
    return str(path)


def test_read_table_takes_the_first_table_and_dashes_as_missing(tmp_path):
    t = demo_spread.read_table(_summary(tmp_path, "s.txt", "68.3", "67.5"))
    assert t == {
        "mIoU (val)": {"softmax": 68.3, "gmm": 67.5},
        "IoU road": {"softmax": 90.0, "gmm": None},
        "ECE % (val, 15 bins)": {"softmax": 0.46, "gmm": 5.42},
    }


def test_spread_mean_sample_std_and_range_per_row_and_model(tmp_path):
    runs = [("68.0", "60.0"), ("69.0", "70.0"), ("70.0", "65.0")]
    tables = [demo_spread.read_table(_summary(tmp_path, f"s{i}.txt", a, b)) for i, (a, b) in enumerate(runs)]
    s = demo_spread.spread(tables)
    assert s["mIoU (val)"]["softmax"]["mean"] == pytest.approx(69.0)
    assert s["mIoU (val)"]["softmax"]["std"] == pytest.approx(1.0)  # sample std of 68, 69, 70
    assert s["mIoU (val)"]["gmm"]["std"] == pytest.approx(statistics.stdev([60.0, 70.0, 65.0]))
    assert (s["mIoU (val)"]["gmm"]["min"], s["mIoU (val)"]["gmm"]["max"]) == (60.0, 70.0)
    assert "gmm" not in s["IoU road"]  # missing in every run
    md = demo_spread.markdown(s, ["a", "b", "c"])
    assert "| mIoU (val) | 69.00 +- 1.00 [68.00, 70.00] | 65.00 +- 5.00 [60.00, 70.00] |" in md
