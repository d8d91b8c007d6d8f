"""The GMMSeg core in pure PyTorch (no detectron2 import): usable from any framework."""

from .assignment import equipartition_error, segment_logsumexp, sinkhorn_assign, vanilla_assign
from .em_module import EMModule, em_modules, named_em_modules
from .inference_memory import InferenceMemory
from .likelihood import gaussian_log_likelihood, naive_gaussian_log_likelihood
from .m_step import gaussian_m_step
from .memory import MEMORY_STATE_NAMES, FeatureMemory
from .memory_layout import MEMORY_LAYOUTS, build_memory, resolve_memory_layout
from .predictor import GMMPredictor
from .refit import refit_gmm
from .sampling import linspace_positions, release_selection, selection_sizes
from .sharded_memory import ShardedFeatureMemory

__all__ = [
    "EMModule",
    "em_modules",
    "named_em_modules",
    "GMMPredictor",
    "MEMORY_LAYOUTS",
    "build_memory",
    "resolve_memory_layout",
    "FeatureMemory",
    "ShardedFeatureMemory",
    "InferenceMemory",
    "MEMORY_STATE_NAMES",
    "gaussian_log_likelihood",
    "naive_gaussian_log_likelihood",
    "sinkhorn_assign",
    "vanilla_assign",
    "segment_logsumexp",
    "equipartition_error",
    "linspace_positions",
    "release_selection",
    "selection_sizes",
    "gaussian_m_step",
    "refit_gmm",
]
