"""The GMMSeg core in pure PyTorch (no detectron2 import): usable from any framework."""
from .assignment import equipartition_error, segment_logsumexp, sinkhorn_assign, vanilla_assign
from .likelihood import gaussian_log_likelihood, naive_gaussian_log_likelihood
from .m_step import gaussian_m_step
from .memory import FeatureMemory
from .predictor import GMMPredictor
from .refit import refit_gmm
from .sampling import linspace_positions, release_selection, selection_sizes

__all__ = [
    "GMMPredictor", "FeatureMemory", "gaussian_log_likelihood", "naive_gaussian_log_likelihood",
    "sinkhorn_assign", "vanilla_assign", "segment_logsumexp", "equipartition_error",
    "linspace_positions", "release_selection", "selection_sizes", "gaussian_m_step", "refit_gmm",
]
