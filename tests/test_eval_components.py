"""SegmentMeIfYouCan's component-level metrics (sIoU, PPV, mean F1) on hand-drawn masks."""

import numpy as np
import pytest

from gmmseg.evaluation.components import (
    F1_THRESHOLDS,
    ComponentStore,
    best_f1_threshold,
    component_metrics,
    component_scores,
)


def _case():
    """8 x 8, row 0 void. Ground truth: A = rows 1-2 x cols 1-2, B = rows 1-2 x cols 4-5 (4 px
    each), C = rows 5-6 x cols 1-3 (6 px). Prediction: P1 = rows 0-2 x cols 1-5 (row 0 is void:
    10 px count) covers A, B and the gap between them; P2 = rows 5-6 x cols 2-3 plus (7, 4),
    joined to (6, 3) only diagonally (5 px, 4 of C); P3 = rows 4-5 x cols 6-7 (4 px, no
    anomaly). (3, 6) is void and predicted: it would join P1 and P3, but void pixels are out."""
    mask = np.zeros((8, 8), np.uint8)
    mask[0] = 255
    mask[3, 6] = 255
    mask[1:3, 1:3] = 1
    mask[1:3, 4:6] = 1
    mask[5:7, 1:4] = 1
    pred = np.zeros((8, 8), bool)
    pred[0:3, 1:6] = True
    pred[5:7, 2:4] = True
    pred[7, 4] = True
    pred[4:6, 6:8] = True
    pred[3, 6] = True
    return mask, pred


def test_component_scores_by_hand():
    mask, pred = _case()
    siou, ppv = component_scores(mask, pred)
    # sIoU(A) = |A n P1| / |(A u P1) minus B| = 4 / (10 - 4); the same for B. Without removing
    # the other object's pixels it would be 4 / 10.
    # sIoU(C) = |C n P2| / |C u P2| = 4 / (6 + 5 - 4): P2 is one component with (7, 4) (8-connected)
    np.testing.assert_allclose(
        siou, [4 / 6, 4 / 6, 4 / 7], rtol=0, atol=1e-12
    )  # A, B, C: raster order
    # PPV: P1 = 8 / 10 (the void row is not P1's), P3 = 0 / 4, P2 = 4 / 5 (raster order: P1, P3, P2)
    np.testing.assert_allclose(ppv, [0.8, 0.0, 0.8], rtol=0, atol=1e-12)


def test_component_metrics_by_hand():
    mask, pred = _case()
    siou, ppv = component_scores(mask, pred)
    m = component_metrics([siou], [ppv])
    assert m["sIoU"] == pytest.approx((4 / 6 + 4 / 6 + 4 / 7) / 3, abs=1e-12)
    assert m["PPV"] == pytest.approx(1.6 / 3, abs=1e-12)
    # tau 0.25 .. 0.55: 3 TP (4/7 = 0.571 > 0.55), 0 FN, 1 FP (P3)      F1 = 6 / 7
    # tau 0.60, 0.65: C is a FN (4/7 <= 0.6): 2 TP, 1 FN, 1 FP          F1 = 4 / 6
    # tau 0.70, 0.75: 0 TP, 3 FN, 1 FP (P1 and P2 have PPV 0.8 > 0.75) F1 = 0
    want = [6 / 7] * 7 + [4 / 6] * 2 + [0.0] * 2
    assert list(m["thresholds"]) == pytest.approx(F1_THRESHOLDS) and len(F1_THRESHOLDS) == 11
    np.testing.assert_allclose(m["F1"], want, rtol=0, atol=1e-12)
    assert m["meanF1"] == pytest.approx((6 + 4 / 3) / 11, abs=1e-12)  # = 2 / 3
    assert (m["TP"][0], m["FN"][0], m["FP"][0]) == (3, 0, 1)
    assert (m["num_gt_components"], m["num_pred_components"]) == (3, 3)


def test_counts_are_summed_over_images_before_f1():
    """F1 of the summed TP / FN / FP, not the mean of per-image F1s: image 1 has one perfect
    detection, image 2 one missed object and nothing predicted."""
    m = component_metrics([np.array([1.0]), np.array([0.0])], [np.array([1.0]), np.zeros(0)])
    np.testing.assert_allclose(m["F1"], [2 / 3] * 11)  # 2 * 1 / (2 * 1 + 1 + 0); per image: 1 and 0
    assert m["sIoU"] == 0.5 and m["PPV"] == 1.0
    empty = component_metrics([np.zeros(0)], [np.zeros(0)])
    assert np.isnan(empty["sIoU"]) and np.isnan(empty["PPV"]) and np.isnan(empty["meanF1"])


def test_sizes_filters_and_threshold_edges():
    mask, pred = _case()
    # predicted components under 5 px dropped: P3 (4 px); P1 (10) and P2 (5) stay
    siou, ppv = component_scores(mask, pred, min_pred_size=5)
    np.testing.assert_allclose(sorted(ppv), [0.8, 0.8])
    # ground-truth components under 5 px become void: A and B; P1 now has 2 non-void pixels
    # (the gap between them), neither anomalous
    siou, ppv = component_scores(mask, pred, min_gt_size=5)
    np.testing.assert_allclose(siou, [4 / 7])
    np.testing.assert_allclose(sorted(ppv), [0.0, 0.0, 0.8])
    # exactly tau: sIoU = 0.5 is not > 0.5 (FN), PPV = 0.5 is <= 0.5 (FP)
    m = component_metrics([np.array([0.5])], [np.array([0.5])], thresholds=[0.5])
    assert (m["TP"], m["FN"], m["FP"]) == ([0], [1], [1])


def test_best_f1_threshold_by_hand():
    # scores 1, 2, 3, 4 (ascending bins): anomalous pixels 0, 1, 1, 0; known 5, 1, 0, 1 (P = 2)
    edges, pos, neg = np.array([1.0, 2, 3, 4]), np.array([0, 1, 1, 0]), np.array([5, 1, 0, 1])
    # score >= 4: F1 = 0; >= 3: 2 / (1 + 1 + 2) = 0.5; >= 2: 4 / (2 + 2 + 2) = 0.667; >= 1: 4 / 11
    t, f1 = best_f1_threshold(edges, pos, neg)
    assert t == 2.0 and f1 == pytest.approx(2 / 3)
    # ties go to the highest threshold
    t, f1 = best_f1_threshold(np.array([1.0, 2]), np.array([1, 1]), np.array([2, 0]))
    assert t == 2.0 and f1 == pytest.approx(2 / 3)  # >= 2: 2 / (1 + 0 + 2); >= 1: 4 / (2 + 2 + 2)


def test_store_binarises_at_score_at_least_threshold():
    mask, pred = _case()
    score = np.where(pred, 2.0, 1.0).astype(np.float32)
    score[7, 4] = 1.5  # the diagonal pixel: in P2 at threshold 1.5, not at 2
    store = ComponentStore()
    store.add(mask, {"s": score})
    assert store.metrics("s", 1.5)["sIoU"] == pytest.approx((4 / 6 + 4 / 6 + 4 / 7) / 3)
    # without (7, 4): P2 = C's 4 px, sIoU(C) = 4 / 6
    assert store.metrics("s", 2.0)["sIoU"] == pytest.approx(4 / 6)


def test_store_memory_bound_subsamples_and_does_not_depend_on_order():
    rng = np.random.default_rng(0)
    images = []
    for _ in range(4):
        mask = np.zeros((16, 16), np.uint8)
        mask[2:10, 3:11] = 1
        images.append((mask, {"s": rng.random((16, 16)).astype(np.float32) + mask}))
    full = ComponentStore()
    for m, s in images:
        full.add(m, s)
    assert full.stride == 1 and full.nbytes == 4 * 16 * 16 * 5
    small = ComponentStore(max_bytes=4 * 16 * 16 * 5 // 4)  # a quarter: stride 2
    for m, s in images:
        small.add(m, s)
    assert small.stride == 2 and small.nbytes == 4 * 8 * 8 * 5
    np.testing.assert_array_equal(small.images[0][0], images[0][0][::2, ::2])
    # split in two (one image fits at stride 1, three do not) and merged in another order: the
    # same maps, hence the same metrics
    a, b = ComponentStore(max_bytes=small.max_bytes), ComponentStore(max_bytes=small.max_bytes)
    for m, s in images[3:]:
        a.add(m, s)
    for m, s in images[:3]:
        b.add(m, s)
    assert (a.stride, b.stride) == (1, 2)
    merged = a.merge(b)
    assert merged.stride == 2
    assert merged.metrics("s", 1.0) == small.metrics("s", 1.0)
    assert small.metrics("s", 1.0)["sIoU"] == pytest.approx(1.0)  # the object is exactly >= 1
