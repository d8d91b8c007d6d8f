"""MaskFormerHead: the pixel decoder followed by the transformer decoder (named `predictor`, as in
the official release, whose checkpoints keep these two names)."""

from typing import Dict

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from .pixel_decoder import build_pixel_decoder
from .transformer_decoder import build_transformer_decoder

__all__ = ["MaskFormerHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    # Official Mask2Former rewrites every non-predictor key of a checkpoint whose metadata gives this
    # module a version < 2 (or none) to `pixel_decoder.*`; version 2 says the keys are already so.
    _version = 2

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        transformer_predictor: nn.Module,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
    ):
        super().__init__()
        self.num_classes, self.ignore_value, self.loss_weight = (
            num_classes,
            ignore_value,
            loss_weight,
        )
        self.common_stride = 4
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        feature = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        if feature != "multi_scale_pixel_decoder":
            raise ValueError(
                f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={feature!r}: this project implements "
                f"Mask2Former only, which needs 'multi_scale_pixel_decoder'"
            )
        h = cfg.MODEL.SEM_SEG_HEAD
        input_shape = {k: v for k, v in input_shape.items() if k in h.IN_FEATURES}
        return {
            "num_classes": h.NUM_CLASSES,
            "ignore_value": h.IGNORE_VALUE,
            "loss_weight": h.LOSS_WEIGHT,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "transformer_predictor": build_transformer_decoder(cfg, h.CONVS_DIM),
        }

    def forward(self, features, mask=None):
        """features: backbone outputs by name -> the transformer decoder's output dict."""
        mask_features, _, multi_scale_features = self.pixel_decoder.forward_features(features)
        return self.predictor(multi_scale_features, mask_features, mask)
