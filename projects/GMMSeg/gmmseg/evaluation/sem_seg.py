"""detectron2's SemSegEvaluator, plus a warning for a class that is labelled but never predicted.

A class the model never predicts on a set where it is labelled has 0 IoU; in a table of 11 or 19
IoUs that is easy to miss, and for a GMM it is the signature of a class locked out of the EM
(docs/GMM_SETTINGS.md). The confusion matrix already holds what is needed: this evaluator reads
it after detectron2's evaluation and names such classes in the log (the results stay detectron2's:
a dict of floats, as its EvalHook requires).
"""

import logging

import numpy as np
from detectron2.evaluation import SemSegEvaluator

__all__ = ["CheckedSemSegEvaluator", "never_predicted_classes"]

logger = logging.getLogger(__name__)


def never_predicted_classes(conf_matrix: np.ndarray) -> list:
    """Class ids with ground-truth pixels and no predicted pixel, from detectron2's confusion matrix
    ((K + 1, K + 1), [prediction, ground truth], the last row and column for ignored pixels)."""
    m = conf_matrix[:-1, :-1]
    labelled, predicted = m.sum(0), m.sum(1)
    return np.flatnonzero((labelled > 0) & (predicted == 0)).tolist()


class CheckedSemSegEvaluator(SemSegEvaluator):
    """SemSegEvaluator that warns about classes labelled in the set but never predicted."""

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
