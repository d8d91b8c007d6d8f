"""Component-level anomaly metrics of SegmentMeIfYouCan (Chan et al., NeurIPS 2021 Datasets and
Benchmarks): sIoU, PPV and the mean F1, next to the pixel-level AUROC / AP / FPR95.

Pure numpy + scipy.ndimage, no detectron2: AnomalyEvaluator feeds `ComponentStore`, tests call
the functions directly.

Definitions (the paper's, section "performance metrics"), per image, over non-void pixels
----------------------------------------------------------------------------------------
* K: the ground-truth anomaly components, the 8-connected components of the pixels labelled
  anomaly; K^: the predicted components, the 8-connected components of the non-void pixels the
  binarised score calls anomalous (predictions on void pixels are dropped before labelling).
* sIoU(k) for k in K = |k n K^(k)| / |(k u K^(k)) minus A(k)|, where K^(k) is the union of the
  predicted components that touch k and A(k) the pixels of the *other* ground-truth components:
  a prediction that covers two adjacent objects is not penalised, for either, for the other one.
* PPV(k^) for k^ in K^ = |k^ n K(k^)| / |k^|, K(k^) = the ground-truth components k^ touches
  (i.e. the fraction of k^'s pixels that are anomalous).
* At a threshold tau: a ground-truth component is a true positive if sIoU > tau, a false
  negative otherwise; a predicted component is a false positive if PPV <= tau.
  F1(tau) = 2 TP / (2 TP + FN + FP), with TP, FN, FP summed over all images of the dataset, and
  the mean F1 averages F1 over tau in {0.25, 0.30, ..., 0.75} (`F1_THRESHOLDS`).
* sIoU and PPV of a dataset: the means over all its ground-truth (resp. predicted) components.
  NaN where there is no such component (and the mean F1 where no component exists at all).

Binarisation (the benchmark's choice, which we follow): a pixel is predicted anomalous when its
score is >= the threshold that maximises the *pixel-level* F1 of that score over the whole
dataset (`best_f1_threshold`, from the evaluator's score histogram: a bin's lower edge, so the
binarisation agrees exactly with the pixel-level precision-recall curve). The benchmark's tooling
compares with > at the threshold its curve returned; the two differ only on pixels whose score
equals the threshold exactly.

Size filters: the benchmark's tooling also drops predicted components below a minimum size and
turns ground-truth components below another into void (500 / 100 pixels on its 2048 x 1024
anomaly track, 50 / 10 on the obstacle track). Sizes depend on the resolution, so here both
default to 0 (no filter); `min_pred_size` / `min_gt_size` set them.

Memory: the threshold is known only after the last image, so the score maps must be kept
(`ComponentStore`): float32 per score plus the mask, 1 + 4 x (number of scores) bytes per pixel,
at most `max_bytes`. Beyond that every kept map is subsampled by 2 along both axes (every 2nd
row and column, nearest pixel) as often as needed; the stride used is reported. The result
depends only on the data, not on the order of the images or how they are split across processes
(subsampling composes: a[::2][::2] = a[::4]); stride 1 is exact.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy import ndimage

__all__ = [
    "F1_THRESHOLDS",
    "component_scores",
    "component_metrics",
    "best_f1_threshold",
    "ComponentStore",
]

#: the benchmark's sIoU / PPV thresholds tau of the mean F1: 0.25, 0.30, ..., 0.75
F1_THRESHOLDS = tuple(np.round(np.linspace(0.25, 0.75, 11), 2).tolist())
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
VOID = 255


def _label(mask: np.ndarray, min_size: int = 0) -> Tuple[np.ndarray, int]:
    """8-connected components of a bool mask: (labels 0 = none, 1..n; n), components smaller
    than min_size removed and the rest renumbered 1..n."""
    labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if min_size > 1 and n:
        keep = np.bincount(labels.ravel(), minlength=n + 1) >= min_size
        keep[0] = False
        new_id = np.zeros(n + 1, np.int64)
        new_id[keep] = np.arange(1, int(keep.sum()) + 1)
        labels, n = new_id[labels], int(keep.sum())
    return labels, n


def component_scores(
    anomaly_mask: np.ndarray, predicted: np.ndarray, min_pred_size: int = 0, min_gt_size: int = 0
) -> Tuple[np.ndarray, np.ndarray]:
    """sIoU of each ground-truth component and PPV of each predicted component of one image.

    anomaly_mask: (H, W) 1 anomaly, 0 known, 255 void; predicted: (H, W) bool, the binarised
    score. Returns (sIoU (n_gt,), PPV (n_pred,)) float64, in the order of scipy's labelling.
    """
    anomaly_mask = np.asarray(anomaly_mask)
    predicted = np.asarray(predicted, dtype=bool)
    if anomaly_mask.shape != predicted.shape:
        raise ValueError(
            f"mask {anomaly_mask.shape} and prediction {predicted.shape} differ in size"
        )
    valid = anomaly_mask != VOID
    gt, n_gt = _label(anomaly_mask == 1)
    if min_gt_size > 1 and n_gt:  # small ground-truth components become void
        small = np.bincount(gt.ravel(), minlength=n_gt + 1) < min_gt_size
        small[0] = False
        valid &= ~small[gt]
        gt, n_gt = _label((anomaly_mask == 1) & valid)
    pred, n_pred = _label(predicted & valid, min_pred_size)
    gt_v, pred_v = gt[valid], pred[valid]
    gt_size = np.bincount(gt_v, minlength=n_gt + 1)[1:]
    pred_size = np.bincount(pred_v, minlength=n_pred + 1)[1:]
    # the overlaps: (ground-truth component, predicted component, pixel count), sparse
    both = (gt_v > 0) & (pred_v > 0)
    codes, counts = np.unique(
        gt_v[both].astype(np.int64) * (n_pred + 1) + pred_v[both], return_counts=True
    )
    g, p = codes // (n_pred + 1) - 1, codes % (n_pred + 1) - 1  # 0-based ids
    anomalous_in_pred = np.bincount(p, weights=counts, minlength=n_pred)  # |k^ n K(k^)|
    # per ground-truth component k, over the predicted components k^ that touch it:
    inter = np.bincount(g, weights=counts, minlength=n_gt)  # |k n K^(k)|
    touching = np.bincount(g, weights=pred_size[p], minlength=n_gt)  # |K^(k)|
    others = np.bincount(g, weights=anomalous_in_pred[p] - counts, minlength=n_gt)  # |K^(k) n A(k)|
    siou = inter / (gt_size + touching - inter - others)
    ppv = anomalous_in_pred / np.maximum(pred_size, 1)
    return siou.astype(np.float64), ppv.astype(np.float64)


def component_metrics(
    siou: Sequence[np.ndarray],
    ppv: Sequence[np.ndarray],
    thresholds: Sequence[float] = F1_THRESHOLDS,
) -> Dict[str, object]:
    """Dataset-level metrics (fractions) from the per-image outputs of `component_scores`.

    Returns sIoU, PPV (means over components), meanF1, F1 (per threshold, a list), the component
    counts and TP / FN / FP per threshold.
    """
    s = np.sort(np.concatenate([np.asarray(a, np.float64).ravel() for a in siou] or [np.zeros(0)]))
    v = np.sort(np.concatenate([np.asarray(a, np.float64).ravel() for a in ppv] or [np.zeros(0)]))
    nan = float("nan")
    tp = [int((s > t).sum()) for t in thresholds]
    fn = [int(s.size - x) for x in tp]
    fp = [int((v <= t).sum()) for t in thresholds]
    f1 = [2 * a / (2 * a + b + c) if (2 * a + b + c) else nan for a, b, c in zip(tp, fn, fp)]
    return {
        "sIoU": float(s.mean()) if s.size else nan,
        "PPV": float(v.mean()) if v.size else nan,
        "meanF1": float(np.mean(f1)) if s.size + v.size else nan,
        "F1": f1,
        "thresholds": list(thresholds),
        "TP": tp,
        "FN": fn,
        "FP": fp,
        "num_gt_components": int(s.size),
        "num_pred_components": int(v.size),
    }


def best_f1_threshold(edges: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> Tuple[float, float]:
    """The score threshold of the best pixel-level F1: (threshold, F1).

    edges, pos, neg: a ScoreHistogram's counts (bins ascending by score, `edges` their lower
    edges). A pixel is predicted anomalous when its score >= the threshold, a bin's lower edge;
    among equal F1 the highest threshold wins. Without anomalous pixels F1 is 0 everywhere and
    the threshold is the top bin's edge.
    """
    edges = np.asarray(edges, dtype=np.float64)
    if edges.size == 0:
        raise ValueError("empty histogram")
    p = np.asarray(pos, np.int64)[::-1]
    n = np.asarray(neg, np.int64)[::-1]
    tp, fp = np.cumsum(p), np.cumsum(n)
    f1 = 2.0 * tp / (tp + fp + int(p.sum()))
    best = int(np.argmax(f1))  # the first maximum from the top: the highest threshold
    return float(edges[::-1][best]), float(f1[best])


class ComponentStore:
    """The anomaly masks and score maps of a dataset, kept (bounded) for `component_scores`.

    add(mask (H, W) uint8, {score name: (H, W) float32}); `merge(other)` adds another store's
    images (e.g. gathered from other processes). Memory: at most `max_bytes` of maps; above it
    all maps are subsampled by 2 per axis, as often as needed (`stride`, see the module doc).
    """

    def __init__(self, max_bytes: int = 2**29):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.stride = 1
        self.images: List[Tuple[np.ndarray, Dict[str, np.ndarray]]] = []
        self.nbytes = 0

    @staticmethod
    def _bytes(entry) -> int:
        mask, scores = entry
        return mask.nbytes + sum(v.nbytes for v in scores.values())

    @staticmethod
    def _subsample(entry, factor: int):
        mask, scores = entry
        return (
            np.ascontiguousarray(mask[::factor, ::factor]),
            {k: np.ascontiguousarray(v[::factor, ::factor]) for k, v in scores.items()},
        )

    def add(self, mask: np.ndarray, scores: Dict[str, np.ndarray]) -> None:
        entry = (
            np.asarray(mask, np.uint8),
            {k: np.asarray(v, np.float32) for k, v in scores.items()},
        )
        self._append(self._subsample(entry, self.stride) if self.stride > 1 else entry, self.stride)

    def merge(self, other: "ComponentStore") -> "ComponentStore":
        for entry in other.images:
            self._append(entry, other.stride)
        return self

    def _append(self, entry, stride: int) -> None:
        if stride < self.stride:
            entry = self._subsample(entry, self.stride // stride)
        elif stride > self.stride:
            self._coarsen(stride // self.stride)
        self.images.append(entry)
        self.nbytes += self._bytes(entry)
        while self.nbytes > self.max_bytes:
            self._coarsen(2)

    def _coarsen(self, factor: int) -> None:
        self.images = [self._subsample(e, factor) for e in self.images]
        self.nbytes = sum(self._bytes(e) for e in self.images)
        self.stride *= factor

    def metrics(
        self, name: str, threshold: float, min_pred_size: int = 0, min_gt_size: int = 0
    ) -> Dict[str, object]:
        """component_metrics of score `name` binarised at score >= threshold, over all images.

        Minimum sizes are in full-resolution pixels (divided by stride^2 on subsampled maps).
        """
        area = self.stride**2
        pred_min, gt_min = -(-min_pred_size // area), -(-min_gt_size // area)
        siou, ppv = [], []
        for mask, scores in self.images:
            s, v = component_scores(mask, scores[name] >= threshold, pred_min, gt_min)
            siou.append(s)
            ppv.append(v)
        out = component_metrics(siou, ppv)
        out.update(threshold=float(threshold), stride=self.stride, num_images=len(self.images))
        return out
