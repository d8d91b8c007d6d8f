"""Pixel-level metrics for anomaly segmentation and calibration, computed from streamed counts.

Pure numpy, no detectron2: the evaluators feed these functions, tests call them directly.

Anomaly detection (AUROC, AP, FPR at 95% TPR)
---------------------------------------------
All three depend on the scores only through their order, so a score map can be reduced to a
histogram of (anomalous, known) pixel counts per score bin, sorted by score. `ScoreHistogram`
keeps such a histogram in memory proportional to the number of *occupied* bins, not pixels:

* A float32 score is mapped to its order-preserving 32-bit integer key (sign, exponent,
  mantissa); a bin is a key with its last `shift` bits dropped. shift = 0 is exact (one bin per
  float32 value). Bins are relative-width (at most 2^(shift-23) of the score's magnitude), so the
  scale and offset of the scores do not matter and an outlier costs one bin, not the range.
* The histogram starts exact and increments `shift` (merging adjacent bins pairwise) whenever more
  than `max_bins` bins (default 2^20, ~20 MB per score) are occupied. The result depends only on
  the data, not on its order or on how it is split across processes: histograms add up exactly.
  -0.0 counts as +0.0; +-inf are ordinary extreme values; NaN raises.

Metrics from a histogram treat the pixels of one bin as tied scores, exactly as the exact
computation treats equal scores (scikit-learn's convention):

* AUROC = trapezoidal area under the ROC curve = P(s_anomaly > s_known) + 1/2 P(tie).
* AP = sum over thresholds of (recall step) * precision (no interpolation), as
  `sklearn.metrics.average_precision_score`.
* FPR95 = false positive rate at the highest threshold whose true positive rate is >= 95%
  (`fpr[searchsorted(tpr, 0.95)]` on the full ROC curve, as the Fishyscapes benchmark).

`binary_ranking_metrics` also returns a rigorous bound on the difference between the binned
values and the values that any finer resolution of the same pixels (in particular the exact
float32 scores) would give. With P anomalous and N known pixels, bin b holding p_b and n_b, and
TP/FP the counts above bin b:

* |AUROC error| <= sum_b p_b n_b / (2 P N)           (only pairs tied in a bin can change)
* 0 <= FPR95_binned - FPR95_exact <= n_b* / N           (b* = the bin where TPR crosses 95%)
* |AP error| <= sum_b p_b/P * (max - min precision a positive of bin b can have at any cut
  inside the bin) = sum_b p_b/P * [(TP+p_b)/(TP+p_b+FP) - (TP+1)/(TP+1+FP+n_b)]

These bounds are reported in the evaluators' JSON. Measured on 2M pixels of overlapping Gaussian
scores (5% anomalous; offsets/scales (0, 1), (100, 7), (-60, 0.01)), |binned - exact| with the
default max_bins = 2^20: AUROC <= 4e-10, AP <= 1e-6, FPR95 <= 1.1e-6, bounds <= 7e-6 (in [0, 1]
units, i.e. < 0.001 percentage points); even max_bins = 2^12 keeps errors below 1.2e-3 and the
bounds below 7e-3. tests/test_eval_anomaly.py checks error <= bound and the exact cases.

Calibration
-----------
`calibration_bin_sums` / `expected_calibration_error`: equal-width confidence bins over [0, 1]
(bin i = (i/B, (i+1)/B], confidence 0 goes to bin 0), per bin the pixel count, the sum of
confidences and the number of correct pixels. ECE = sum_b n_b / N * |acc_b - conf_b|.
The number of bins B defaults to `CALIBRATION_BINS` (15, the paper's), defined once in
gmmseg/config.py with the key TEST.OPEN_WORLD.CALIBRATION_BINS whose default it is.
"""

from typing import Dict, List, Optional, Tuple

import numpy as np

from ..config import CALIBRATION_BINS

__all__ = [
    "ScoreHistogram",
    "binary_ranking_metrics",
    "exact_ranking_metrics",
    "ranking_curves",
    "decimate_curve",
    "CALIBRATION_BINS",
    "calibration_bin_sums",
    "expected_calibration_error",
    "float_to_ordered_key",
    "ordered_key_to_float",
]

_SIGN = np.uint32(0x80000000)
_MANTISSA_BITS = 23


def float_to_ordered_key(x: np.ndarray) -> np.ndarray:
    """float32 values -> uint32 keys with the same order (x < y <=> key(x) < key(y)).

    -0.0 is mapped to the key of +0.0. NaN raises ValueError.
    """
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    if np.isnan(x).any():
        raise ValueError(f"{int(np.isnan(x).sum())} NaN score(s): anomaly scores must not be NaN")
    x = x + np.float32(0.0)  # -0.0 + 0.0 = +0.0
    bits = x.view(np.uint32)
    negative = (bits & _SIGN) != 0
    return np.where(negative, ~bits, bits | _SIGN)


def ordered_key_to_float(keys: np.ndarray) -> np.ndarray:
    """Inverse of `float_to_ordered_key` (keys that decode to NaN give -inf: below -inf's bin)."""
    keys = np.asarray(keys, dtype=np.uint32)
    positive = (keys & _SIGN) != 0
    bits = np.where(positive, keys & ~_SIGN, ~keys).astype(np.uint32)
    values = bits.view(np.float32).copy()
    values[np.isnan(values)] = -np.inf
    return values


class ScoreHistogram:
    """Streaming histogram of anomaly scores for anomalous (positive) and known (negative) pixels.

    add(scores, is_anomaly): (n,) float scores, (n,) bool labels. Starts at the resolution of
    float32 itself (exact) and halves the resolution (drops one more low bit of the keys, merging
    adjacent bins) whenever more than `max_bins` bins are occupied: memory stays below
    ~20 bytes x (max_bins + compact_every) while the bins stay as fine as the data allow.
    The result depends only on the data, not on how it was split into add() / merge() calls
    (coarsening just drops key bits), so per-process histograms merge exactly (`merge`).
    `counts()` -> (lower bin edges (B,) float32 ascending, positives (B,) int64, negatives (B,)).
    """

    def __init__(self, max_bins: int = 2**20, compact_every: Optional[int] = None):
        if max_bins < 16:
            raise ValueError(f"max_bins must be >= 16, got {max_bins}")
        self.max_bins = int(max_bins)
        self.shift = 0  # key bits dropped: bins span 2^(shift - 23) of an octave
        self._compact_every = int(compact_every or max_bins)
        self._keys = np.zeros(0, np.uint32)  # sorted, unique, at self.shift
        self._pos = np.zeros(0, np.int64)
        self._neg = np.zeros(0, np.int64)
        self._pending: List[Tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_len = 0

    @property
    def relative_bin_width(self) -> float:
        """Upper bound on (bin width) / |score| for the current resolution."""
        return 2.0 ** (self.shift - _MANTISSA_BITS)

    def add(self, scores: np.ndarray, is_anomaly: np.ndarray) -> None:
        scores = np.asarray(scores)
        is_anomaly = np.asarray(is_anomaly, dtype=bool).ravel()
        if scores.size != is_anomaly.size:
            raise ValueError(f"{scores.size} scores but {is_anomaly.size} labels")
        if scores.size == 0:
            return
        keys = float_to_ordered_key(scores) >> np.uint32(self.shift)
        uniq, inverse, total = np.unique(keys, return_inverse=True, return_counts=True)
        pos = np.bincount(
            inverse, weights=is_anomaly.astype(np.float64), minlength=uniq.size
        ).astype(np.int64)
        self._push(self.shift, uniq.astype(np.uint32), pos, total.astype(np.int64) - pos)

    def merge(self, other: "ScoreHistogram") -> "ScoreHistogram":
        """Add `other`'s counts to this histogram (in place; coarsens as needed); returns self."""
        other._compact()
        self._push(other.shift, other._keys, other._pos, other._neg)
        self._compact()
        return self

    def _push(self, shift, keys, pos, neg) -> None:
        self._pending.append((shift, keys, pos, neg))
        self._pending_len += keys.size
        if self._pending_len >= self._compact_every:
            self._compact()

    @staticmethod
    def _reduce(keys, pos, neg, presorted=False):
        if not presorted:
            order = np.argsort(keys, kind="stable")
            keys, pos, neg = keys[order], pos[order], neg[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        return keys[starts], np.add.reduceat(pos, starts), np.add.reduceat(neg, starts)

    def _compact(self) -> None:
        if not self._pending:
            return
        parts = [(self.shift, self._keys, self._pos, self._neg)] + self._pending
        self._pending, self._pending_len = [], 0
        shift = max(p[0] for p in parts)
        keys = np.concatenate([k >> np.uint32(shift - s) for s, k, _, _ in parts])
        pos = np.concatenate([p[2] for p in parts])
        neg = np.concatenate([p[3] for p in parts])
        self.shift = shift
        if keys.size == 0:
            return
        keys, pos, neg = self._reduce(keys, pos, neg)
        while keys.size > self.max_bins:  # halve the resolution: sorted order is kept
            self.shift += 1
            keys, pos, neg = self._reduce(keys >> np.uint32(1), pos, neg, presorted=True)
        self._keys, self._pos, self._neg = keys, pos, neg

    def __getstate__(self):  # pickled for comm.gather: send the compact form only
        self._compact()
        return self.__dict__.copy()

    @property
    def num_bins(self) -> int:
        self._compact()
        return int(self._keys.size)

    def counts(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._compact()
        if self.shift >= 32:
            raise RuntimeError("histogram coarsened to a single bin")
        edges = ordered_key_to_float(self._keys << np.uint32(self.shift))
        return edges, self._pos.copy(), self._neg.copy()


def _descending(pos: np.ndarray, neg: np.ndarray, ascending: bool) -> Tuple[np.ndarray, np.ndarray]:
    pos = np.asarray(pos, dtype=np.int64)
    neg = np.asarray(neg, dtype=np.int64)
    if ascending:
        pos, neg = pos[::-1], neg[::-1]
    return pos, neg


def binary_ranking_metrics(
    pos: np.ndarray, neg: np.ndarray, ascending: bool = True, recall_level: float = 0.95
) -> Dict[str, float]:
    """AUROC, AP and FPR at `recall_level` TPR (fractions in [0, 1]) from per-bin counts.

    pos, neg: (B,) counts of anomalous / known pixels per score bin, bins sorted by score
    (ascending by default, as `ScoreHistogram.counts`). Pixels of a bin count as tied.
    Returns also the error bounds "AUROC_max_error", "AP_max_error", "FPR95_max_error" (see the
    module docstring), "num_positive" and "num_negative". Without positives or negatives the
    metrics are NaN.
    """
    p, n = _descending(pos, neg, ascending)
    P, N = int(p.sum()), int(n.sum())
    out = {"num_positive": P, "num_negative": N}
    if P == 0 or N == 0:
        nan = float("nan")
        out.update(
            AUROC=nan, AP=nan, FPR95=nan, AUROC_max_error=nan, AP_max_error=nan, FPR95_max_error=nan
        )
        return out
    tp = np.cumsum(p)  # anomalous pixels with a score in this bin or above
    fp = np.cumsum(n)
    tp_prev = tp - p
    fp_prev = fp - n
    # AUROC: trapezoids between consecutive ROC points (ties in a bin = the diagonal segment)
    auroc = float(np.sum(n * (tp + tp_prev).astype(np.float64)) / (2.0 * P * N))
    auroc_err = float(np.sum(p.astype(np.float64) * n) / (2.0 * P * N))
    # AP: recall steps times the precision after each bin
    has_pos = p > 0
    tp_h, fp_h, p_h = tp[has_pos], fp[has_pos], p[has_pos]
    tpp_h, fpp_h = tp_prev[has_pos], fp_prev[has_pos]
    precision = tp_h / (tp_h + fp_h).astype(np.float64)
    ap = float(np.sum(p_h * precision) / P)
    best = tp_h / (tp_h + fpp_h).astype(np.float64)
    worst = (tpp_h + 1) / (tpp_h + 1 + fp_h).astype(np.float64)
    ap_err = float(np.sum(p_h * (best - worst)) / P)
    # FPR at the first threshold (from the top) whose TPR reaches recall_level
    if recall_level == 0.95:  # in integers: tp >= 0.95 P  <=>  20 tp >= 19 P
        reached = 20 * tp >= 19 * P
    else:
        reached = tp >= recall_level * P
    crossing = int(np.argmax(reached))  # tp[-1] = P, so some bin reaches any level <= 1
    fpr95 = float(fp[crossing] / N)
    fpr_err = float(n[crossing] / N)
    out.update(
        AUROC=auroc,
        AP=ap,
        FPR95=fpr95,
        AUROC_max_error=auroc_err,
        AP_max_error=ap_err,
        FPR95_max_error=fpr_err,
    )
    return out


def exact_ranking_metrics(scores: np.ndarray, is_anomaly: np.ndarray) -> Dict[str, float]:
    """The same metrics computed exactly from all scores (float64, equal scores tied).

    Needs O(n) memory: for tests and small data; the evaluators use `ScoreHistogram`.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(is_anomaly, dtype=bool).ravel()
    if np.isnan(scores).any():
        raise ValueError("NaN score(s)")
    uniq, inverse = np.unique(scores, return_inverse=True)
    pos = np.bincount(inverse, weights=labels.astype(np.float64), minlength=uniq.size).astype(
        np.int64
    )
    total = np.bincount(inverse, minlength=uniq.size).astype(np.int64)
    return binary_ranking_metrics(pos, total - pos, ascending=True)


def ranking_curves(edges: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> Dict[str, np.ndarray]:
    """ROC and precision-recall curves from per-bin counts sorted by ascending score.

    Returns fpr, tpr, roc_thresholds (ROC starts at (0, 0) with threshold +inf) and precision,
    recall, pr_thresholds (one point per bin, from the highest threshold down);
    a pixel is called anomalous when its score >= threshold (a bin's lower edge).
    """
    p, n = _descending(pos, neg, ascending=True)
    thr = np.asarray(edges, dtype=np.float64)[::-1]
    P, N = max(int(p.sum()), 1), max(int(n.sum()), 1)
    tp, fp = np.cumsum(p), np.cumsum(n)
    fpr = np.r_[0.0, fp / N]
    tpr = np.r_[0.0, tp / P]
    roc_thr = np.r_[np.inf, thr]
    keep = (tp + fp) > 0
    precision = np.where(keep, tp / np.maximum(tp + fp, 1), 1.0)
    recall = tp / P
    return {
        "fpr": fpr,
        "tpr": tpr,
        "roc_thresholds": roc_thr,
        "precision": precision[keep],
        "recall": recall[keep],
        "pr_thresholds": thr[keep],
    }


def decimate_curve(x: np.ndarray, y: np.ndarray, max_points: int = 2000) -> np.ndarray:
    """Indices of at most ~max_points points spread evenly along a curve's path length.

    Keeps the first and the last point; for saving and plotting curves with 1e5+ points.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size <= max_points:
        return np.arange(x.size)
    length = np.r_[0.0, np.cumsum(np.abs(np.diff(x)) + np.abs(np.diff(y)))]
    levels = np.linspace(0.0, length[-1], max_points)
    idx = np.searchsorted(length, levels, side="left")
    return np.unique(np.r_[0, np.clip(idx, 0, x.size - 1), x.size - 1])


def calibration_bin_sums(
    confidence: np.ndarray, correct: np.ndarray, num_bins: int = CALIBRATION_BINS
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin: (count (B,) int64, sum of confidence (B,), correct (B,) int64).

    Bin i covers (i/B, (i+1)/B]; a confidence of exactly 0 goes to bin 0.
    """
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    corr = np.asarray(correct, dtype=bool).ravel()
    if conf.size and (np.isnan(conf).any() or conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidences must lie in [0, 1]")
    idx = np.clip(np.ceil(conf * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    count = np.bincount(idx, minlength=num_bins).astype(np.int64)
    conf_sum = np.bincount(idx, weights=conf, minlength=num_bins)
    correct_sum = np.bincount(idx, weights=corr, minlength=num_bins).astype(np.int64)
    return count, conf_sum, correct_sum


def expected_calibration_error(
    count: np.ndarray, conf_sum: np.ndarray, correct_sum: np.ndarray
) -> Dict[str, object]:
    """ECE and MCE (fractions) plus per-bin accuracy / mean confidence (NaN for empty bins)."""
    count = np.asarray(count, dtype=np.int64)
    total = int(count.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.asarray(correct_sum, dtype=np.float64) / count
        conf = np.asarray(conf_sum, dtype=np.float64) / count
    filled = count > 0
    gaps = np.abs(acc - conf)
    if total == 0:
        ece = mce = accuracy = mean_conf = float("nan")
    else:
        ece = float(np.sum(count[filled] * gaps[filled]) / total)
        mce = float(gaps[filled].max())
        accuracy = float(np.sum(correct_sum) / total)
        mean_conf = float(np.sum(conf_sum) / total)
    return {
        "ECE": ece,
        "MCE": mce,
        "accuracy": accuracy,
        "confidence": mean_conf,
        "num_pixels": total,
        "bin_accuracy": acc,
        "bin_confidence": conf,
        "bin_count": count,
    }
