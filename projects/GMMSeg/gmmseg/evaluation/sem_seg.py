"""detectron2's SemSegEvaluator, plus a warning for a class that is labelled but never predicted.

A class the model never predicts on a set where it is labelled has 0 IoU; in a table of 11 or 19
IoUs that is easy to miss, and for a GMM it is the signature of a class locked out of the EM
(docs/GMM_SETTINGS.md). The confusion matrix already holds what is needed: this evaluator reads
it after detectron2's evaluation and names such classes in the log (the results stay detectron2's:
a dict of floats, as its EvalHook requires).

Label maps are read with the project's loader unless another is given (`make_sem_seg_loading_fn`:
the dataset's label_remap, values checked against its classes). detectron2's default reader calls
`np.array(image, copy=False, dtype=int)`, which numpy 2 refuses ("Unable to avoid copy"), since a
PNG's uint8 values always have to be copied into int.
"""

import logging

import numpy as np
from detectron2.evaluation import SemSegEvaluator

from ..data.mapper import make_sem_seg_loading_fn

__all__ = ["CheckedSemSegEvaluator", "never_predicted_classes"]

logger = logging.getLogger(__name__)


def never_predicted_classes(conf_matrix: np.ndarray) -> list:
    """Class ids with ground-truth pixels and no predicted pixel, from detectron2's confusion matrix
    ((K + 1, K + 1), [prediction, ground truth], the last row and column for ignored pixels)."""
    m = conf_matrix[:-1, :-1]
    labelled, predicted = m.sum(0), m.sum(1)
    return np.flatnonzero((labelled > 0) & (predicted == 0)).tolist()


class CheckedSemSegEvaluator(SemSegEvaluator):
    """SemSegEvaluator that warns about classes labelled in the set but never predicted, reading
    label maps with `make_sem_seg_loading_fn(dataset_name)` unless `sem_seg_loading_fn` is given."""

    def __init__(self, dataset_name, *args, sem_seg_loading_fn=None, **kwargs):
        if sem_seg_loading_fn is None:
            sem_seg_loading_fn = make_sem_seg_loading_fn(dataset_name)
        super().__init__(dataset_name, *args, sem_seg_loading_fn=sem_seg_loading_fn, **kwargs)

    def evaluate(self):
        results = super().evaluate()
        if results is None:  # not the main process
            return results
        never = never_predicted_classes(self._conf_matrix)
        if never:
            names = [self._class_names[c] for c in never]
            logger.warning(
                "%s: the model predicts no pixel of %s although the set labels %s pixels of them (IoU 0). "
                "For a GMM model this is the signature of a class locked out of the EM: see the training "
                "log's coverage warnings and MODEL.GMM.PUSH_ROWS (docs/GMM_SETTINGS.md).",
                self._dataset_name,
                ", ".join(names),
                ", ".join(str(int(self._conf_matrix[:-1, c].sum())) for c in never),
            )
        return results
