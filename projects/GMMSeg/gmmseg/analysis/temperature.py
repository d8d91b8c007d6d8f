"""Fit Mask2Former's post-hoc class temperature (MODEL.MASK_FORMER.TEST.CLASS_TEMPERATURE).

Temperature scaling (Guo et al. 2017) of the query class logits: p_q = softmax(l_q / T). At
inference the per-pixel class scores are s_c(x) = sum_q p_q(c) m_q(x) over the known classes
c < K (m_q: the query's mask probability at x), and softmax(sem_seg) = s_c(x) / sum_c' s_c'(x)
(sem_seg = log s). `fit_class_temperature` picks the T that minimises the mean negative
log-likelihood of labelled pixels under those normalised scores: one scalar, the network and its
ranking of the queries untouched, no retraining.

Unlike temperature scaling of a per-pixel softmax, T can change the prediction itself: the
scores mix several queries, and sharpening or flattening each query's class distribution moves
their mixture. So the fit reports the pixel accuracy before and after as well as the NLL and the
expected calibration error (the project's ECE, gmmseg/evaluation/metrics.py: equal-width bins of
the max-probability confidence, by default its CALIBRATION_BINS; tools/fit_temperature.py passes
the config's TEST.OPEN_WORLD.CALIBRATION_BINS, as the evaluators use).

The samples come from tools/fit_temperature.py (MaskFormer.query_predictions on the training
split); this module is plain tensors in, numbers out.
"""

import math
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from ..evaluation.metrics import CALIBRATION_BINS, calibration_bin_sums, expected_calibration_error
from ..modeling.mask_former.meta_arch import SCORE_FLOOR

__all__ = ["fit_class_temperature", "pixel_class_log_probs", "DEFAULT_TEMPERATURE_BOUNDS"]

#: the search interval of T: 0.05 multiplies the logits by 20, 20 divides them by 20; both far beyond
#: what a trained model needs, so the bounds only keep the search away from degenerate values
DEFAULT_TEMPERATURE_BOUNDS = (0.05, 20.0)

Sample = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def fit_class_temperature(
    samples: Sequence[Sample],
    bounds: Tuple[float, float] = DEFAULT_TEMPERATURE_BOUNDS,
    num_bins: int = CALIBRATION_BINS,
) -> Dict[str, float]:
    """The temperature of the query class logits that minimises the pixels' mean NLL.

    samples: per image (query logits (Q, K+1), mask probabilities at its sampled pixels (Q, P),
    labels (P,) in 0..K-1 (ignored pixels already left out)). Images may differ in Q and P.
    The search is over log T (bounded Brent, scipy.optimize.minimize_scalar): T and 1/T are
    equally far from 1 there, and the NLL is smooth in it.

    Returns {"temperature", "nll_before" (T = 1), "nll_after", "ece_before", "ece_after",
    "accuracy_before", "accuracy_after" (ECE and accuracy in percent, as CalibrationEvaluator),
    "pixels", "images"}. When the search does not beat T = 1 (the optimum is 1 within its
    tolerance) T = 1 is returned, so nll_after <= nll_before whenever 1 lies within the bounds.
    """
    low, high = _check_bounds(bounds)
    logits, masks, labels, valid = _stack_samples(samples)

    def nll(log_t: float) -> float:
        return _mean_nll(pixel_class_log_probs(logits, masks, math.exp(log_t)), labels, valid)

    search = minimize_scalar(
        nll, bounds=(math.log(low), math.log(high)), method="bounded", options={"xatol": 1e-4}
    )
    temperature, nll_after = math.exp(float(search.x)), float(search.fun)
    nll_before = nll(0.0)
    if low <= 1.0 <= high and nll_before <= nll_after:
        temperature, nll_after = 1.0, nll_before
    before = _calibration(pixel_class_log_probs(logits, masks, 1.0), labels, valid, num_bins)
    after = _calibration(pixel_class_log_probs(logits, masks, temperature), labels, valid, num_bins)
    return {
        "temperature": temperature,
        "nll_before": nll_before,
        "nll_after": nll_after,
        "ece_before": before["ECE"],
        "ece_after": after["ECE"],
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "pixels": int(valid.sum()),
        "images": int(labels.shape[0]),
    }


def pixel_class_log_probs(
    logits: torch.Tensor, masks: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(N, Q, K+1) query logits, (N, Q, P) mask probabilities -> (N, P, K) log of the per-pixel
    normalised scores, i.e. log_softmax of inference's sem_seg at `temperature` (the same floor
    before the log), for the sampled pixels only."""
    prob = (logits / temperature).softmax(-1)[..., :-1]
    scores = torch.einsum("nqk,nqp->npk", prob, masks).clamp_min(SCORE_FLOOR)
    return scores.log() - scores.sum(-1, keepdim=True).log()


def _mean_nll(log_probs: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> float:
    picked = log_probs.gather(-1, labels[..., None]).squeeze(-1)
    return float(-(picked * valid).sum() / valid.sum())


def _calibration(
    log_probs: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, num_bins: int
) -> Dict:
    """ECE and accuracy (percent) of the max-probability confidence, by the evaluator's own helpers."""
    confidence, predicted = log_probs.exp().max(-1)
    correct = (predicted == labels)[valid].numpy()
    # rounding can put a confidence a hair above 1, which the binning refuses
    sums = calibration_bin_sums(np.clip(confidence[valid].numpy(), 0.0, 1.0), correct, num_bins)
    e = expected_calibration_error(*sums)
    return {"ECE": 100.0 * e["ECE"], "accuracy": 100.0 * e["accuracy"]}


def _check_bounds(bounds) -> Tuple[float, float]:
    low, high = (float(b) for b in bounds)
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(
            f"temperature bounds must satisfy 0 < low < high < inf, got {tuple(bounds)}"
        )
    return low, high


def _stack_samples(samples: Sequence[Sample]):
    """Pad the images to a common number of queries and pixels, so every candidate T is one batched
    contraction: padded queries have zero masks (they add nothing to any score), padded pixels are
    marked invalid. Returns float64 logits (N, Q, K+1), masks (N, Q, P), long labels (N, P) and
    bool valid (N, P), on the CPU."""
    if not samples:
        raise ValueError("fit_class_temperature: no sample (no image with a labelled pixel)")
    num_classes = None
    for i, (logits, masks, labels) in enumerate(samples):
        num_classes = _check_sample(i, logits, masks, labels, num_classes)
    n = len(samples)
    q = max(s[0].shape[0] for s in samples)
    p = max(s[2].shape[0] for s in samples)
    logits = torch.zeros(n, q, num_classes + 1, dtype=torch.float64)
    masks = torch.zeros(n, q, p, dtype=torch.float64)
    labels = torch.zeros(n, p, dtype=torch.long)
    valid = torch.zeros(n, p, dtype=torch.bool)
    for i, (lg, mk, lb) in enumerate(samples):
        logits[i, : lg.shape[0]] = lg.detach().cpu().double()
        masks[i, : mk.shape[0], : mk.shape[1]] = mk.detach().cpu().double()
        labels[i, : lb.shape[0]] = lb.detach().cpu().long()
        valid[i, : lb.shape[0]] = True
    if not valid.any():
        raise ValueError("fit_class_temperature: the samples hold no labelled pixel")
    return logits, masks, labels, valid


def _check_sample(i, logits, masks, labels, num_classes):
    """Shapes and label range of sample i; returns K (every sample must have the same)."""
    if logits.dim() != 2 or masks.dim() != 2 or labels.dim() != 1:
        raise ValueError(
            f"sample {i}: expected query logits (Q, K+1), masks (Q, P), labels (P,); got shapes "
            f"{tuple(logits.shape)}, {tuple(masks.shape)}, {tuple(labels.shape)}"
        )
    if masks.shape != (logits.shape[0], labels.shape[0]):
        raise ValueError(
            f"sample {i}: masks {tuple(masks.shape)} do not match {logits.shape[0]} queries x "
            f"{labels.shape[0]} labelled pixels"
        )
    k = logits.shape[1] - 1
    if num_classes is not None and k != num_classes:
        raise ValueError(
            f"sample {i}: {k} classes (+ no object), the first sample has {num_classes}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(
            f"sample {i}: labels must be class ids in 0..{k - 1} (ignored pixels left out), got "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    return k
