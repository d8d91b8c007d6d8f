"""Which classes the EM actually learns: real memory rows and training predictions per class.

A class can be locked out silently: with the release's push rule (only correctly classified pixels
enter the memory) and its random initial memory, a class the head never classifies correctly never
receives a real row; the M-steps still "update" it, from the random rows, so its Gaussians stay
broad and its logits low, and the head keeps not predicting it (all-class CamVid: bicyclist and
pedestrian at 0 IoU, docs/GMM_SETTINGS.md). Two counters of GMMPredictor show it (`rows_pushed`,
`training_pixels`); this module turns them into per-class figures and warnings, for the training
hook and for studies/gmm_state_report.py (which reads them from a checkpoint).
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

__all__ = [
    "ClassCoverage",
    "class_coverage",
    "coverage_warnings",
    "MIN_REAL_ROW_SHARE",
    "MIN_RECALL",
]

# a class holds "(nearly) no real rows" below this share of the median class's real rows
MIN_REAL_ROW_SHARE = 0.1
# a labelled class is "(nearly) never predicted" below this recall on the training batches
MIN_RECALL = 0.01


@dataclass
class ClassCoverage:
    """Per class (K,): real rows in its memory (pushed, not the initialisation; summed over its
    components) and their capacity; labelled, correctly classified and predicted training pixels."""

    real_rows: torch.Tensor
    capacity: int
    labelled: torch.Tensor
    correct: torch.Tensor
    predicted: torch.Tensor

    def since(self, earlier: Optional["ClassCoverage"]) -> "ClassCoverage":
        """The pixel counts since `earlier` (the memory rows as they are now)."""
        if earlier is None:
            return self
        return ClassCoverage(
            self.real_rows,
            self.capacity,
            self.labelled - earlier.labelled,
            self.correct - earlier.correct,
            self.predicted - earlier.predicted,
        )


def class_coverage(
    rows_pushed: torch.Tensor, training_pixels: torch.Tensor, num_components: int, memory_size: int
) -> ClassCoverage:
    """rows_pushed (K * M,) rows ever pushed per (class, component); training_pixels (3, K)
    labelled / correct / predicted pixels. A ring of `memory_size` rows holds min(pushed, size) real
    ones (memory_size 0, batch statistics only: the rows pushed count)."""
    pushed = rows_pushed.detach().long().cpu().clone().view(-1, num_components)
    real = pushed.clamp_max(memory_size) if memory_size > 0 else pushed
    pixels = training_pixels.detach().long().cpu().clone()  # a snapshot, not a view of the counters
    return ClassCoverage(real.sum(1), memory_size * num_components, pixels[0], pixels[1], pixels[2])


def coverage_warnings(
    cov: ClassCoverage,
    window: Optional[ClassCoverage] = None,
    min_share: float = MIN_REAL_ROW_SHARE,
    min_recall: float = MIN_RECALL,
) -> List[Tuple[int, str]]:
    """[(class, reason)] for each class labelled in the training data that holds (nearly) no real
    memory rows (fewer than `min_share` x the median over labelled classes), or that the head
    (nearly) never classified correctly (recall < `min_recall`) in `window` (default: all of
    training; the hook passes the pixels since its previous check)."""
    window = cov if window is None else window
    labelled = cov.labelled > 0
    out = []
    if bool(labelled.any()):
        median = float(torch.quantile(cov.real_rows[labelled].double(), 0.5))
        for c in labelled.nonzero().flatten().tolist():
            real = int(cov.real_rows[c])
            if real < min_share * median or (real == 0 and median > 0):
                what = (
                    f"{real} of its {cov.capacity} memory rows are real (median class: {median:.0f})"
                    if cov.capacity
                    else f"{real} rows pushed (median class: {median:.0f})"
                )
                out.append((c, f"(nearly) no real rows: {what}"))
    for c in (window.labelled > 0).nonzero().flatten().tolist():
        recall = float(window.correct[c]) / float(window.labelled[c])
        if recall < min_recall:
            out.append(
                (
                    c,
                    f"(nearly) never predicted: recall {100 * recall:.2f} % of {int(window.labelled[c])} "
                    f"labelled training pixels, predicted {int(window.predicted[c])} times",
                )
            )
    return sorted(out)
