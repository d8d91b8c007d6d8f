"""Open-world evaluation: anomaly segmentation (AUROC / AP / FPR95 of the GMM score and the
softmax baselines) and calibration (ECE, reliability diagrams), in detectron2's DatasetEvaluator
protocol, plus the plots. (Offline fits of a trained model, such as Mask2Former's class
temperature, are analysis/.)
Importing it also registers the anomaly benchmarks (gmmseg.data.anomaly_datasets)."""

from .anomaly import SCORE_LABELS, AnomalyEvaluator, anomaly_scores
from .build import build_open_world_evaluators, model_display_name
from .calibration import CalibrationEvaluator
from .metrics import (
    ScoreHistogram,
    binary_ranking_metrics,
    calibration_bin_sums,
    exact_ranking_metrics,
    expected_calibration_error,
)
from .plots import (
    load_anomaly_curves,
    load_calibration_bins,
    plot_pr_curves,
    plot_reliability_diagram,
    plot_reliability_diagrams,
    plot_roc_curves,
)
from .sem_seg import CheckedSemSegEvaluator, never_predicted_classes

__all__ = [
    "AnomalyEvaluator",
    "CalibrationEvaluator",
    "CheckedSemSegEvaluator",
    "never_predicted_classes",
    "build_open_world_evaluators",
    "model_display_name",
    "anomaly_scores",
    "SCORE_LABELS",
    "ScoreHistogram",
    "binary_ranking_metrics",
    "exact_ranking_metrics",
    "calibration_bin_sums",
    "expected_calibration_error",
    "plot_roc_curves",
    "plot_pr_curves",
    "plot_reliability_diagram",
    "plot_reliability_diagrams",
    "load_anomaly_curves",
    "load_calibration_bins",
]
