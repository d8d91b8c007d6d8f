"""Anomaly metrics (AUROC, AP, FPR95), the streaming histogram and the AnomalyEvaluator."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gmmseg.evaluation import AnomalyEvaluator, anomaly_scores, load_anomaly_curves
from gmmseg.evaluation import anomaly as anomaly_module
from gmmseg.evaluation.metrics import (
    ScoreHistogram,
    binary_ranking_metrics,
    exact_ranking_metrics,
    float_to_ordered_key,
    ordered_key_to_float,
)


# ---------------------------------------------------------------- hand-computed cases
def test_perfectly_separable():
    m = exact_ranking_metrics([0.1, 0.2, 0.3, 0.7, 0.9], [0, 0, 0, 1, 1])
    assert m["AUROC"] == 1.0 and m["AP"] == 1.0 and m["FPR95"] == 0.0


def test_reversed():
    m = exact_ranking_metrics([0.9, 0.8, 0.1, 0.2], [0, 0, 1, 1])
    assert m["AUROC"] == 0.0
    assert m["FPR95"] == 1.0  # every known pixel is flagged before both anomalies are found
    # AP: anomalies at ranks 3 and 4: (1/3 + 2/4) / 2
    assert m["AP"] == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_small_example_by_hand():
    # ranks by score: 0.8 (A), 0.4 (K), 0.35 (A), 0.1 (K)
    m = exact_ranking_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    # pairs (A, K): (0.8>0.4), (0.8>0.1), (0.35<0.4), (0.35>0.1) -> 3 of 4
    assert m["AUROC"] == pytest.approx(0.75)
    # precision at each anomaly: 1/1, 2/3
    assert m["AP"] == pytest.approx((1 + 2 / 3) / 2)
    # TPR reaches 95% only at threshold 0.35, where 1 of 2 known pixels is above
    assert m["FPR95"] == pytest.approx(0.5)


def test_ties_count_half():
    m = exact_ranking_metrics([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0])
    assert m["AUROC"] == pytest.approx(0.5)
    assert m["AP"] == pytest.approx(0.5)
    assert m["FPR95"] == pytest.approx(1.0)


def test_no_positive_gives_nan():
    m = exact_ranking_metrics([0.1, 0.2], [0, 0])
    assert np.isnan(m["AUROC"]) and np.isnan(m["AP"]) and np.isnan(m["FPR95"])


def test_against_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.random(20000) < 0.1
    s = np.round(rng.normal(size=y.size) + 1.2 * y, 2)  # rounding creates many ties
    m = exact_ranking_metrics(s, y)
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    assert m["AUROC"] == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert m["AP"] == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)
    assert m["FPR95"] == pytest.approx(fpr[np.searchsorted(tpr, 0.95)], abs=1e-12)


# ---------------------------------------------------------------- streaming histogram
def test_ordered_key_preserves_order_and_roundtrips():
    x = np.array(
        [-np.inf, -3e38, -1.5, -1e-30, -0.0, 0.0, 1e-45, 1e-30, 2.0, 3e38, np.inf], np.float32
    )
    keys = float_to_ordered_key(x)
    assert np.all(np.diff(keys.astype(np.int64)) >= 0)
    assert keys[4] == keys[5]  # -0.0 == +0.0
    np.testing.assert_array_equal(ordered_key_to_float(keys)[[0, 2, 5, 8, 10]], x[[0, 2, 5, 8, 10]])
    with pytest.raises(ValueError, match="NaN"):
        float_to_ordered_key(np.array([1.0, np.nan]))


def _stream(scores, labels, max_bins, chunk=50_000):
    h = ScoreHistogram(max_bins, compact_every=30_000)
    for i in range(0, scores.size, chunk):
        h.add(scores[i : i + chunk], labels[i : i + chunk])
    _, pos, neg = h.counts()
    return binary_ranking_metrics(pos, neg), h


@pytest.mark.parametrize("offset,scale", [(0.0, 1.0), (150.0, 10.0), (-60.0, 0.01)])
def test_streaming_matches_exact_within_bound(offset, scale):
    rng = np.random.default_rng(1)
    n = 300_000
    y = rng.random(n) < 0.05
    s = ((rng.normal(size=n) + 1.5 * y) * scale + offset).astype(np.float32)
    exact = exact_ranking_metrics(s, y)
    approx, h = _stream(s, y, 2**13)  # forces coarsening: 300k distinct values, 8k bins
    assert h.shift > 0 and h.num_bins <= 2**13
    for key in ("AUROC", "AP", "FPR95"):
        err = abs(approx[key] - exact[key])
        assert err <= approx[f"{key}_max_error"] + 1e-12, (key, err, approx[f"{key}_max_error"])
        assert err < 1e-3, (key, err)  # < 0.1 percentage points with 8k bins
    assert approx["AUROC_max_error"] < 5e-4
    # enough bins for every float32 value: exact
    full, h = _stream(s, y, 2**20)
    assert h.shift == 0
    for key in ("AUROC", "AP", "FPR95"):
        assert full[key] == pytest.approx(exact[key], abs=1e-12)


def test_coarse_bins_error_is_bounded():
    rng = np.random.default_rng(2)
    y = rng.random(100_000) < 0.2
    s = (rng.normal(size=y.size) + y).astype(np.float32)
    exact = exact_ranking_metrics(s, y)
    coarse, _ = _stream(s, y, 16)  # very coarse: visible error, still bounded
    for key in ("AUROC", "AP", "FPR95"):
        assert abs(coarse[key] - exact[key]) <= coarse[f"{key}_max_error"] + 1e-12
    assert coarse["FPR95"] >= exact["FPR95"]  # binned FPR95 is conservative


def test_histogram_merge_equals_single_pass():
    rng = np.random.default_rng(3)
    s = rng.standard_cauchy(60_000).astype(np.float32)  # heavy tails, both signs
    y = rng.random(s.size) < 0.3
    whole = ScoreHistogram(512)
    whole.add(s, y)
    a, b = ScoreHistogram(512), ScoreHistogram(512, compact_every=1000)
    a.add(s[:5_000], y[:5_000])
    for i in range(5_000, s.size, 7_000):  # b coarsens at other moments than `whole`
        b.add(s[i : i + 7_000], y[i : i + 7_000])
    merged = ScoreHistogram(512).merge(a).merge(b)
    assert whole.shift == merged.shift > 0
    for x, z in zip(whole.counts(), merged.counts()):
        np.testing.assert_array_equal(x, z)
    assert sum(c.sum() for c in whole.counts()[1:]) == s.size


# ---------------------------------------------------------------- scores from model outputs
def test_anomaly_scores_from_logits():
    logits = torch.randn(5, 6, 7)
    scores = anomaly_scores({"sem_seg": logits})
    assert list(scores) == ["msp", "entropy", "max_logit", "energy"]
    p = torch.softmax(logits, 0)
    # -log MSP orders pixels exactly as -MSP
    torch.testing.assert_close(torch.exp(-scores["msp"]), p.amax(0))
    torch.testing.assert_close(scores["entropy"], -(p * p.log()).sum(0))
    torch.testing.assert_close(scores["max_logit"], -logits.amax(0))
    # energy by hand at one pixel: -log(e^1 + e^2 + e^3) = -(3 + log(1 + e^-1 + e^-2)) = -3.4076
    hand = anomaly_scores({"sem_seg": torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)})["energy"]
    assert abs(float(hand) + 3.40761) < 1e-4
    gmm = torch.randn(6, 7)
    scores = anomaly_scores({"sem_seg": logits, "anomaly_scores": {"likelihood": gmm}})
    assert list(scores) == ["likelihood", "msp", "entropy", "max_logit", "energy"]
    torch.testing.assert_close(scores["likelihood"], gmm)


# ---------------------------------------------------------------- evaluator end-to-end
H, W = 12, 16


def _register_fake(tmp_path, name, masks):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    dicts = []
    for i, mask in enumerate(masks):
        path = str(tmp_path / f"{name}_{i}_mask.png")
        Image.fromarray(mask.astype(np.uint8)).save(path)
        dicts.append(
            {"file_name": f"img_{i}.png", "height": H, "width": W, "anomaly_mask_file_name": path}
        )
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(anomaly_eval=True)
    return dicts


def _masks(seed, n=3):
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        m = np.zeros((H, W), np.uint8)
        m[2:6, 3:9] = 1
        m[rng.random((H, W)) < 0.1] = 255
        masks.append(m)
    return masks


def _outputs(masks, separable=True, k=4):
    outs = []
    for m in masks:
        logits = torch.randn(k, H, W)
        anomalous = torch.from_numpy(m == 1).float()
        gmm = anomalous * 10 + torch.rand(H, W) if separable else torch.rand(H, W)
        outs.append({"sem_seg": logits, "anomaly_scores": {"likelihood": gmm}})
    return outs


def test_evaluator_end_to_end(tmp_path):
    masks = _masks(0)
    dicts = _register_fake(tmp_path, "test_eval_anomaly_fake", masks)
    out_dir = tmp_path / "out"
    ev = AnomalyEvaluator(
        "test_eval_anomaly_fake", str(out_dir), model_name="GMMSeg (test)"
    )  # world size 1
    ev.reset()
    outputs = _outputs(masks)
    for d, o in zip(dicts, outputs):
        ev.process([{"file_name": d["file_name"]}], [o])
    res = ev.evaluate()["anomaly"]
    assert set(res) == {
        f"{s}_{m}"
        for s in ("likelihood", "msp", "entropy", "max_logit", "energy")
        for m in ("AUROC", "AP", "FPR95", "sIoU", "PPV", "meanF1")
    }
    assert res["likelihood_AUROC"] == pytest.approx(100.0) and res[
        "likelihood_AP"
    ] == pytest.approx(100.0)
    assert res["likelihood_FPR95"] == pytest.approx(0.0)
    # baselines from random logits: the exact values over the non-void pixels
    valid = [m != 255 for m in masks]
    y = np.concatenate([m[v] == 1 for m, v in zip(masks, valid)])
    ml = np.concatenate([(-o["sem_seg"].amax(0)).numpy()[v] for o, v in zip(outputs, valid)])
    exact = exact_ranking_metrics(ml, y)
    assert res["max_logit_AUROC"] == pytest.approx(100 * exact["AUROC"], abs=1e-3)
    assert res["max_logit_FPR95"] == pytest.approx(100 * exact["FPR95"], abs=0.5)
    # files
    prefix = out_dir / "anomaly_test_eval_anomaly_fake"
    report = json.loads((out_dir / "anomaly_test_eval_anomaly_fake.json").read_text())
    assert report["num_anomalous_pixels"] == int(y.sum())
    assert report["num_known_pixels"] == int((~y).sum())
    assert report["scores"]["likelihood"]["AUROC"] == pytest.approx(100.0)
    curves = load_anomaly_curves(str(prefix) + "_curves.npz")
    assert set(curves) == {"likelihood", "msp", "entropy", "max_logit", "energy"}
    assert (
        curves["likelihood"]["tpr"][-1] == pytest.approx(1.0)
        and curves["likelihood"]["fpr"][0] == 0.0
    )
    for suffix in ("_roc.png", "_pr.png"):
        with Image.open(str(prefix) + suffix) as im:
            assert im.size[0] > 300 and im.size[1] > 300
    # reset clears the state
    ev.reset()
    assert ev.evaluate() == {}


def test_evaluator_softmax_model_and_reversed(tmp_path):
    masks = _masks(1, n=2)
    dicts = _register_fake(tmp_path, "test_eval_anomaly_softmax", masks)
    ev = AnomalyEvaluator("test_eval_anomaly_softmax", None, distributed=False)
    ev.reset()
    for d, m in zip(dicts, masks):
        logits = torch.zeros(3, H, W)
        # anomalies get the *most* confident logits: every baseline is reversed
        logits[0] = torch.from_numpy(m == 1).float() * 20 + torch.rand(H, W)
        ev.process([{"file_name": d["file_name"]}], [{"sem_seg": logits}])
    res = ev.evaluate()["anomaly"]
    assert "likelihood_AUROC" not in res
    for s in ("msp", "entropy", "max_logit", "energy"):
        assert res[f"{s}_AUROC"] == pytest.approx(0.0, abs=1e-6)
        assert res[f"{s}_FPR95"] == pytest.approx(100.0)


def test_evaluator_gathers_across_processes(tmp_path, monkeypatch):
    """The distributed path: two ranks' histograms merged = one process over all images."""
    masks = _masks(2, n=4)
    dicts = _register_fake(tmp_path, "test_eval_anomaly_dist", masks)
    outputs = _outputs(masks, separable=False)
    single = AnomalyEvaluator("test_eval_anomaly_dist", None, distributed=False)
    ranks = [AnomalyEvaluator("test_eval_anomaly_dist", None, distributed=True) for _ in range(2)]
    for i, (d, o) in enumerate(zip(dicts, outputs)):
        single.process([{"file_name": d["file_name"]}], [o])
        ranks[i % 2].process([{"file_name": d["file_name"]}], [o])
    expected = single.evaluate()
    other_state = (ranks[1]._hists, ranks[1]._num_images, ranks[1]._components)
    monkeypatch.setattr(anomaly_module.comm, "synchronize", lambda: None)
    monkeypatch.setattr(anomaly_module.comm, "gather", lambda data, dst=0: [data, other_state])
    got = ranks[0].evaluate()
    assert got == expected
    monkeypatch.setattr(anomaly_module.comm, "is_main_process", lambda: False)
    assert ranks[1].evaluate() == {}


def test_evaluator_rejects_bad_inputs(tmp_path):
    masks = _masks(3, n=1)
    dicts = _register_fake(tmp_path, "test_eval_anomaly_bad", masks)
    ev = AnomalyEvaluator("test_eval_anomaly_bad", None, distributed=False)
    with pytest.raises(ValueError, match="original image size"):
        ev.process([{"file_name": dicts[0]["file_name"]}], [{"sem_seg": torch.randn(3, H + 1, W)}])
    with pytest.raises(KeyError, match="no anomaly mask"):
        ev.process([{"file_name": "unknown.png"}], [{"sem_seg": torch.randn(3, H, W)}])
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(dicts[0]["anomaly_mask_file_name"])
    with pytest.raises(ValueError, match=r"value\(s\) \[7\]"):
        ev.process([{"file_name": dicts[0]["file_name"]}], [{"sem_seg": torch.randn(3, H, W)}])


def test_evaluator_component_metrics_by_hand(tmp_path):
    """One 8 x 10 image, two anomalies (A: rows 1-2 x cols 1-2, B: rows 5-6 x cols 6-8) and a
    GMM score that is 3 on A, 2 on a known 2 x 2 block (rows 5-6 x cols 1-2), 1 on B, 0 elsewhere.
    Pixel F1 (P = 10): score >= 3: 2 * 4 / (4 + 0 + 10) = 0.571; >= 2: 8 / 18 = 0.444;
    >= 1: 20 / (10 + 4 + 10) = 0.833 (best); >= 0: 20 / 90. At threshold 1 the components are
    A, B (sIoU 1, PPV 1) and the known block (PPV 0): sIoU 100, PPV 66.7, F1 = 4 / 5 at every tau."""
    mask = np.zeros((8, 10), np.uint8)
    mask[1:3, 1:3] = 1
    mask[5:7, 6:9] = 1
    gmm = torch.zeros(8, 10)
    gmm[1:3, 1:3], gmm[5:7, 1:3], gmm[5:7, 6:9] = 3.0, 2.0, 1.0
    dicts = _register_fake(tmp_path, "test_eval_anomaly_components", [mask])
    ev = AnomalyEvaluator(
        "test_eval_anomaly_components", str(tmp_path / "out"), distributed=False, plots=False
    )
    ev.process(
        [{"file_name": dicts[0]["file_name"]}],
        [{"sem_seg": torch.zeros(2, 8, 10), "anomaly_scores": {"likelihood": gmm}}],
    )
    res = ev.evaluate()["anomaly"]
    assert res["likelihood_sIoU"] == pytest.approx(100.0)
    assert res["likelihood_PPV"] == pytest.approx(200 / 3)
    assert res["likelihood_meanF1"] == pytest.approx(80.0)
    report = json.loads(
        (tmp_path / "out" / "anomaly_test_eval_anomaly_components.json").read_text()
    )
    comp = report["scores"]["likelihood"]["components"]
    assert comp["threshold"] == 1.0 and comp["pixel_F1_at_threshold"] == pytest.approx(2000 / 24)
    assert (comp["num_gt_components"], comp["num_pred_components"], comp["stride"]) == (2, 3, 1)
    # constant logits: every softmax score ties everywhere; all pixels predicted: one component
    # over the whole image, PPV 10 / 80, each object's sIoU = its size / (80 - the other's size)
    assert res["msp_PPV"] == pytest.approx(12.5)
    assert res["msp_sIoU"] == pytest.approx(100 * (4 / 74 + 6 / 76) / 2)
    off = AnomalyEvaluator(
        "test_eval_anomaly_components", None, distributed=False, component_max_bytes=0
    )
    off.process(
        [{"file_name": dicts[0]["file_name"]}],
        [{"sem_seg": torch.zeros(2, 8, 10), "anomaly_scores": {"likelihood": gmm}}],
    )
    assert "likelihood_sIoU" not in off.evaluate()["anomaly"]


def test_component_memory_comes_from_the_config(tmp_path):
    from detectron2.config import get_cfg

    from gmmseg import add_gmmseg_config
    from gmmseg.evaluation import build_open_world_evaluators

    _register_fake(tmp_path, "test_eval_anomaly_component_cfg", _masks(4, n=1))
    cfg = add_gmmseg_config(get_cfg())
    assert cfg.TEST.OPEN_WORLD.COMPONENT_MAX_MB == 512
    (ev,) = build_open_world_evaluators(
        cfg, "test_eval_anomaly_component_cfg", None, distributed=False
    )
    assert ev._components.max_bytes == 512 * 2**20
    cfg.TEST.OPEN_WORLD.COMPONENT_MAX_MB = 0
    (ev,) = build_open_world_evaluators(
        cfg, "test_eval_anomaly_component_cfg", None, distributed=False
    )
    assert ev._components is None
