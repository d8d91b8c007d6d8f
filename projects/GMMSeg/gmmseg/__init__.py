"""GMMSeg for detectron2. Importing the package registers its components in detectron2."""

from . import data, modeling  # noqa: F401  (registrations)
from .config import add_gmmseg_config, inference_config, load_config

__all__ = ["add_gmmseg_config", "inference_config", "load_config"]
