from . import (
    backbone,  # noqa: F401  (registers build_timm_backbone and build_mit_backbone)
    mask_former,  # noqa: F401  (registers Mask2Former: MaskFormer, MaskFormerHead, its decoders)
    sem_seg,  # noqa: F401  (registers the per-pixel head, decoders and meta-architecture)
)
from .predictors import PREDICTOR_REGISTRY, SoftmaxPredictor, build_predictor
