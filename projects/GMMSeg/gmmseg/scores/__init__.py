"""The anomaly scores of the project, in one table (pure PyTorch; modeling/, evaluation/, deploy/
and the studies all read it). See table.py."""

from .table import (
    DEFAULT_MAPS,
    FITTED,
    INGREDIENTS,
    SCORE_KEY,
    SCORES,
    AnomalyScore,
    FittedScore,
    available_scores,
    check_score_name,
    compute_scores,
    default_map,
    fitted_scores,
    query_likelihood_weights,
    register_fitted_score,
    register_score,
    score_ingredients,
    score_labels,
)

__all__ = [
    "INGREDIENTS",
    "SCORES",
    "AnomalyScore",
    "available_scores",
    "compute_scores",
    "register_score",
    "score_labels",
    "score_ingredients",
    "DEFAULT_MAPS",
    "default_map",
    "check_score_name",
    "SCORE_KEY",
    "FITTED",
    "FittedScore",
    "fitted_scores",
    "query_likelihood_weights",
    "register_fitted_score",
]
