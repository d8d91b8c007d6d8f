"""GMMSeg for detectron2. Importing the package registers its components in detectron2."""

from . import data, modeling  # noqa: F401  (registrations)
from .config import add_gmmseg_config, load_config
from .inference import build_inference_model, inference_config, inference_setup

__all__ = [
    "add_gmmseg_config",
    "load_config",
    "inference_setup",
    "inference_config",
    "build_inference_model",
]
