from . import sem_seg  # noqa: F401  (registers the per-pixel head, decoders and meta-architecture)
from .predictors import PREDICTOR_REGISTRY, SoftmaxPredictor, build_predictor
