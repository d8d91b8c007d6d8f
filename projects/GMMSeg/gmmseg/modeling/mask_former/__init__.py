"""Mask2Former (semantic segmentation) written for this project, with the class head taken from the
predictor registry: MODEL.PREDICTOR.NAME "softmax" is the official model, "gmm" its GMMSeg variant.

Registered names (as the official release, so its yaml files and checkpoints apply):
META_ARCHITECTURE "MaskFormer", SEM_SEG_HEAD "MaskFormerHead", PIXEL_DECODER_NAME
"MSDeformAttnPixelDecoder", TRANSFORMER_DECODER_NAME "MultiScaleMaskedTransformerDecoder".
Importing the official `mask2former` package in the same process would clash with these names.
Its config keys (MODEL.MASK_FORMER.*, official names and defaults) are added by gmmseg/config.py.
"""

from .criterion import SetCriterion
from .head import MaskFormerHead
from .matcher import HungarianMatcher
from .meta_arch import MaskFormer, query_anomaly_score, semantic_inference
from .pixel_decoder import MSDeformAttn, MSDeformAttnPixelDecoder, ms_deform_attn_sample
from .transformer_decoder import TRANSFORMER_DECODER_REGISTRY, MultiScaleMaskedTransformerDecoder

__all__ = [
    "MaskFormer",
    "MaskFormerHead",
    "MSDeformAttnPixelDecoder",
    "MSDeformAttn",
    "ms_deform_attn_sample",
    "MultiScaleMaskedTransformerDecoder",
    "TRANSFORMER_DECODER_REGISTRY",
    "HungarianMatcher",
    "SetCriterion",
    "semantic_inference",
    "query_anomaly_score",
]
