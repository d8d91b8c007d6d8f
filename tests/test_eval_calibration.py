"""ECE / reliability diagram: hand-computed cases and the CalibrationEvaluator end-to-end."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gmmseg.evaluation import CalibrationEvaluator, load_calibration_bins, plot_reliability_diagrams
from gmmseg.evaluation import calibration as calibration_module
from gmmseg.evaluation.metrics import calibration_bin_sums, expected_calibration_error


def test_ece_hand_case():
    # 10 pixels at confidence 0.9, 9 correct (calibrated); 10 at 0.6, 3 correct (gap 0.3)
    conf = np.r_[np.full(10, 0.9), np.full(10, 0.6)]
    correct = np.r_[np.arange(10) < 9, np.arange(10) < 3]
    e = expected_calibration_error(*calibration_bin_sums(conf, correct, 15))
    assert e["ECE"] == pytest.approx(0.5 * 0.0 + 0.5 * 0.3)
    assert e["MCE"] == pytest.approx(0.3)
    assert e["accuracy"] == pytest.approx(12 / 20) and e["confidence"] == pytest.approx(0.75)
    assert e["bin_count"].sum() == 20 and (e["bin_count"] > 0).sum() == 2
    assert np.isnan(e["bin_accuracy"][0])  # empty bins are NaN, not 0


def test_bin_edges():
    count, _, _ = calibration_bin_sums(
        np.array([0.0, 1 / 15 + 1e-9, 0.5, 1.0]), np.ones(4, bool), 15
    )
    # 0 -> bin 0, just above 1/15 -> bin 1, 0.5 -> bin 7 ((7/15, 8/15]), 1.0 -> last bin
    assert count[0] == 1 and count[1] == 1 and count[7] == 1 and count[14] == 1
    with pytest.raises(ValueError):
        calibration_bin_sums(np.array([1.5]), np.ones(1, bool))


def test_perfectly_calibrated_is_zero():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 200_000)
    correct = rng.random(conf.size) < conf
    e = expected_calibration_error(*calibration_bin_sums(conf, correct, 15))
    assert e["ECE"] < 0.01


H, W = 4, 6  # 24 pixels: 10 confident, 10 unsure, 4 void


def _register(tmp_path, name):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    gt = np.full(H * W, 255, np.uint8)
    gt[:10] = [0] * 9 + [1]  # predicted 0 at confidence 0.9: 9 of 10 correct
    gt[10:20] = [0] * 3 + [1] * 7  # predicted 0 at confidence 0.6: 3 of 10 correct
    path = str(tmp_path / f"{name}_gt.png")
    Image.fromarray(gt.reshape(H, W)).save(path)
    dicts = [{"file_name": "a.png", "sem_seg_file_name": path, "height": H, "width": W}]
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(ignore_label=255, stuff_classes=["a", "b"])
    return path


def _logits():
    p0 = torch.full((H * W,), 0.5)
    p0[:10], p0[10:20] = 0.9, 0.6
    p0[20:] = 0.99  # void pixels: must not count
    return torch.stack([p0.log(), (1 - p0).log()]).view(2, H, W)


def test_evaluator_end_to_end(tmp_path):
    _register(tmp_path, "test_eval_calib_fake")
    out = tmp_path / "out"
    ev = CalibrationEvaluator(
        "test_eval_calib_fake", str(out), num_bins=15, distributed=False, model_name="GMMSeg (test)"
    )
    ev.reset()
    ev.process([{"file_name": "a.png"}], [{"sem_seg": _logits()}])
    res = ev.evaluate()["calibration"]
    assert res["ECE"] == pytest.approx(15.0, abs=1e-4)
    assert res["MCE"] == pytest.approx(30.0, abs=1e-4)
    assert res["accuracy"] == pytest.approx(60.0) and res["confidence"] == pytest.approx(
        75.0, abs=1e-4
    )
    saved = json.loads((out / "calibration_test_eval_calib_fake.json").read_text())
    assert saved["num_pixels"] == 20 and saved["num_bins"] == 15
    assert sum(saved["bins"]["bin_count"]) == 20
    i9 = math.ceil(0.9 * 15) - 1
    assert saved["bins"]["bin_accuracy"][i9] == pytest.approx(0.9)
    assert saved["bins"]["bin_accuracy"][0] is None
    with Image.open(out / "calibration_test_eval_calib_fake_reliability.png") as im:
        assert im.size[0] > 300 and im.size[1] > 300
    # the saved bins rebuild a comparison figure (e.g. GMMSeg vs its softmax twin)
    bins = load_calibration_bins(str(out / "calibration_test_eval_calib_fake.json"))
    assert bins["ECE"] == pytest.approx(15.0, abs=1e-4)
    path = plot_reliability_diagrams(
        {"GMMSeg": bins, "Softmax": bins}, str(tmp_path / "cmp.png"), "cmp"
    )
    with Image.open(path) as im:
        assert im.size[0] > im.size[1]


def test_evaluator_gathers_across_processes(tmp_path, monkeypatch):
    _register(tmp_path, "test_eval_calib_dist")
    a = CalibrationEvaluator("test_eval_calib_dist", None, distributed=True)
    b = CalibrationEvaluator("test_eval_calib_dist", None, distributed=True)
    a.process([{"file_name": "a.png"}], [{"sem_seg": _logits()}])
    b.process([{"file_name": "a.png"}], [{"sem_seg": _logits()}])
    other = (b._count, b._conf_sum, b._correct, b._num_images)
    monkeypatch.setattr(calibration_module.comm, "synchronize", lambda: None)
    monkeypatch.setattr(calibration_module.comm, "gather", lambda data, dst=0: [data, other])
    res = a.evaluate()["calibration"]
    assert res["ECE"] == pytest.approx(15.0, abs=1e-4)  # the same data twice: same ECE
    assert int(a._count.sum()) == 20  # local state untouched


def test_evaluator_rejects_bad_labels(tmp_path):
    path = _register(tmp_path, "test_eval_calib_bad")
    ev = CalibrationEvaluator("test_eval_calib_bad", None, distributed=False)
    Image.fromarray(np.full((H, W), 5, np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"value\(s\) \[5\]"):
        ev.process([{"file_name": "a.png"}], [{"sem_seg": _logits()}])
    Image.fromarray(np.zeros((H, W), np.uint8)).save(path)  # a valid label, a mis-sized prediction
    with pytest.raises(ValueError, match="prediction"):
        ev.process([{"file_name": "a.png"}], [{"sem_seg": torch.zeros(2, H + 1, W)}])


def test_ece_weights_each_bin_by_its_pixel_count():
    # 30 pixels at confidence 0.9, 27 correct (gap 0); 10 at 0.6, 3 correct (gap 0.3):
    # ECE = 30/40 * 0 + 10/40 * 0.3 = 0.075 (the unweighted mean of the two gaps would be 0.15)
    conf = np.r_[np.full(30, 0.9), np.full(10, 0.6)]
    correct = np.r_[np.arange(30) < 27, np.arange(10) < 3]
    e = expected_calibration_error(*calibration_bin_sums(conf, correct, 15))
    assert e["ECE"] == pytest.approx(0.075, abs=1e-12)
    assert e["MCE"] == pytest.approx(0.3)
    assert sorted(e["bin_count"][e["bin_count"] > 0].tolist()) == [10, 30]


# 10 pixels at confidence 0.62, all correct; 10 at 0.68, none correct. With 15 bins they fall
# into (9/15, 10/15] and (10/15, 11/15]: ECE = 0.5 * 0.38 + 0.5 * 0.68 = 0.53. With 10 bins both
# fall into (0.6, 0.7]: accuracy 0.5, confidence 0.65, ECE = 0.15.
_BINS_CONF = np.r_[np.full(10, 0.62), np.full(10, 0.68)]
_BINS_CORRECT = np.r_[np.ones(10, bool), np.zeros(10, bool)]


def test_the_hand_case_separates_10_from_15_bins():
    assert expected_calibration_error(*calibration_bin_sums(_BINS_CONF, _BINS_CORRECT, 15))[
        "ECE"
    ] == pytest.approx(0.53, abs=1e-12)
    assert expected_calibration_error(*calibration_bin_sums(_BINS_CONF, _BINS_CORRECT, 10))[
        "ECE"
    ] == pytest.approx(0.15, abs=1e-12)


def _register_bins_case(tmp_path, name):
    """One 4x5 image: predicted class 0 everywhere, at confidence 0.62 (label 0: correct) on
    the first 10 pixels and 0.68 (label 1: wrong) on the last 10. Returns its logits."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    gt = np.r_[np.zeros(10, np.uint8), np.ones(10, np.uint8)].reshape(4, 5)
    path = str(tmp_path / f"{name}_gt.png")
    Image.fromarray(gt).save(path)
    dicts = [{"file_name": "a.png", "sem_seg_file_name": path, "height": 4, "width": 5}]
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(ignore_label=255, stuff_classes=["a", "b"])
    p0 = torch.from_numpy(_BINS_CONF).float()
    return torch.stack([p0.log(), (1 - p0).log()]).view(2, 4, 5)


def test_every_default_bin_count_is_the_papers_15(tmp_path):
    """The function, the evaluator and the config all default to 15 bins (one constant)."""
    from detectron2.config import get_cfg

    from gmmseg import add_gmmseg_config
    from gmmseg.evaluation import build_open_world_evaluators
    from gmmseg.evaluation.metrics import CALIBRATION_BINS

    assert CALIBRATION_BINS == 15
    # the metric's default
    assert expected_calibration_error(*calibration_bin_sums(_BINS_CONF, _BINS_CORRECT))[
        "ECE"
    ] == pytest.approx(0.53, abs=1e-12)
    logits = _register_bins_case(tmp_path, "test_eval_calib_default_bins")
    # the evaluator's default
    ev = CalibrationEvaluator("test_eval_calib_default_bins", None, distributed=False)
    ev.process([{"file_name": "a.png"}], [{"sem_seg": logits}])
    assert ev.evaluate()["calibration"]["ECE"] == pytest.approx(53.0, abs=1e-4)
    # the config's default, through the builder the trainer uses
    cfg = add_gmmseg_config(get_cfg())
    assert cfg.TEST.OPEN_WORLD.CALIBRATION_BINS == 15
    (ev,) = build_open_world_evaluators(
        cfg, "test_eval_calib_default_bins", None, distributed=False
    )
    ev.process([{"file_name": "a.png"}], [{"sem_seg": logits}])
    assert ev.evaluate()["calibration"]["ECE"] == pytest.approx(53.0, abs=1e-4)
