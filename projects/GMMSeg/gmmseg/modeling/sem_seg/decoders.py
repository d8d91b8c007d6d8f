"""Decoders of the per-pixel head: backbone features -> one feature map (B, C, H/s, W/s).

A decoder is an nn.Module with attributes `out_channels` and `common_stride` whose forward takes
the backbone's feature dict. Decoders are registered in DECODER_REGISTRY under their class name,
selected by MODEL.SEM_SEG_HEAD.DECODER, and built detectron2-style: `@configurable` classes called
as cls(cfg, input_shape) or with plain arguments. Where detectron2 has the decoder, it is reused
with its class predictor removed.
"""

from typing import Dict

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead
from detectron2.projects.deeplab import DeepLabV3PlusHead
from detectron2.utils.registry import Registry
from torch import nn

__all__ = [
    "DECODER_REGISTRY",
    "build_decoder",
    "select_features",
    "FPNDecoder",
    "DeepLabV3PlusDecoder",
]

DECODER_REGISTRY = Registry("SEM_SEG_DECODER")
DECODER_REGISTRY.__doc__ = """
Registry for per-pixel decoders: cls(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module with
`out_channels` and `common_stride`; forward(features: Dict[str, Tensor]) -> (B, C, H/s, W/s).
"""


def select_features(cfg, input_shape: Dict[str, ShapeSpec], names=None) -> Dict[str, ShapeSpec]:
    """The ShapeSpecs of the features named by MODEL.SEM_SEG_HEAD.IN_FEATURES (or `names`)."""
    names = list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES if names is None else names)
    missing = [f for f in names if f not in input_shape]
    if missing:
        raise KeyError(
            f"MODEL.SEM_SEG_HEAD.IN_FEATURES names {missing}, but the backbone outputs only {sorted(input_shape)}"
        )
    return {k: input_shape[k] for k in names}


@DECODER_REGISTRY.register()
class FPNDecoder(nn.Module):
    """detectron2's SemSegFPNHead (Panoptic FPN's semantic branch) without its 1x1 predictor."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        conv_dims: int,
        common_stride: int,
        norm: str = "",
    ):
        super().__init__()
        self.body = SemSegFPNHead(
            input_shape, num_classes=1, conv_dims=conv_dims, common_stride=common_stride, norm=norm
        )
        self.body.predictor = nn.Identity()
        self.out_channels, self.common_stride = conv_dims, common_stride

    @classmethod
    def from_config(cls, cfg, input_shape):
        h = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": select_features(cfg, input_shape),
            "conv_dims": h.CONVS_DIM,
            "common_stride": h.COMMON_STRIDE,
            "norm": h.NORM,
        }

    def forward(self, features):
        return self.body.layers(features)


@DECODER_REGISTRY.register()
class DeepLabV3PlusDecoder(nn.Module):
    """detectron2.projects.deeplab's DeepLabV3+ head in its decoder-only mode (no predictor)."""

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], **deeplab_kwargs):
        super().__init__()
        self.body = DeepLabV3PlusHead(input_shape, num_classes=None, **deeplab_kwargs)
        self.out_channels = deeplab_kwargs["decoder_channels"][0]
        self.common_stride = deeplab_kwargs["common_stride"]

    @classmethod
    def from_config(cls, cfg, input_shape):
        h = cfg.MODEL.SEM_SEG_HEAD
        shapes = select_features(cfg, input_shape)
        return {
            "input_shape": shapes,
            "project_channels": list(h.PROJECT_CHANNELS),
            "aspp_dilations": list(h.ASPP_DILATIONS),
            "aspp_dropout": h.ASPP_DROPOUT,
            "decoder_channels": [h.CONVS_DIM] * len(shapes),
            "common_stride": h.COMMON_STRIDE,
            "loss_type": "cross_entropy",
            "norm": h.NORM,
            # ASPP image pooling: a fixed (crop / stride) kernel as detectron2's DeepLab, or global
            # average pooling (MODEL.SEM_SEG_HEAD.ASPP_GLOBAL_POOLING, any test size)
            "train_size": (
                cfg.INPUT.CROP.SIZE
                if cfg.INPUT.CROP.ENABLED and not h.ASPP_GLOBAL_POOLING
                else None
            ),
            "use_depthwise_separable_conv": h.USE_DEPTHWISE_SEPARABLE_CONV,
        }

    def forward(self, features):
        return self.body.layers(features)


def build_decoder(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build the decoder named by cfg.MODEL.SEM_SEG_HEAD.DECODER."""
    name = cfg.MODEL.SEM_SEG_HEAD.DECODER
    if name not in DECODER_REGISTRY:
        raise KeyError(
            f"MODEL.SEM_SEG_HEAD.DECODER={name!r} is not registered; registered decoders: "
            f"{sorted(k for k, _ in DECODER_REGISTRY)}"
        )
    return DECODER_REGISTRY.get(name)(cfg, input_shape)
