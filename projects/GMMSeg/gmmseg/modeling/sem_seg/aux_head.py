"""AuxiliaryFCNHead: deep supervision on one backbone feature (MMSegmentation's auxiliary_head).

    logits = Linear(Dropout(NUM_CONVS x [3x3 conv-norm-ReLU](features[IN_FEATURE])))   (B, K, h, w)

Used in training only: PerPixelHead adds LOSS_WEIGHT * cross-entropy(logits upsampled to the
labels) as "loss_aux". It always has a linear (softmax) classifier, whatever the main predictor,
and plays no part at inference. Selected by MODEL.SEM_SEG_HEAD.AUX_HEAD.IN_FEATURE != "".
"""

from typing import Dict, Optional

from detectron2.layers import Conv2d, ShapeSpec
from torch import nn

from .fcn import FCNDecoder

__all__ = ["AuxiliaryFCNHead", "build_auxiliary_head"]


class AuxiliaryFCNHead(nn.Module):
    def __init__(
        self,
        in_feature: str,
        in_channels: int,
        stride: int,
        *,
        num_classes: int,
        conv_dims: int = 256,
        num_convs: int = 1,
        norm: str = "",
        dropout: float = 0.1,
        loss_weight: float = 0.4,
    ):
        super().__init__()
        self.body = FCNDecoder(
            {in_feature: ShapeSpec(channels=in_channels, stride=stride)},
            conv_dims=conv_dims,
            num_convs=num_convs,
            concat_input=False,
            norm=norm,
            dropout=dropout,
        )
        self.classifier = Conv2d(conv_dims, num_classes, 1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        self.loss_weight = loss_weight

    def forward(self, features):
        """features: the backbone's dict -> logits (B, K, h, w)."""
        return self.classifier(self.body(features))


def build_auxiliary_head(cfg, input_shape: Dict[str, ShapeSpec]) -> Optional[AuxiliaryFCNHead]:
    """The head configured by MODEL.SEM_SEG_HEAD.AUX_HEAD, or None when IN_FEATURE is ""."""
    h = cfg.MODEL.SEM_SEG_HEAD
    a = h.AUX_HEAD
    if not a.IN_FEATURE:
        return None
    if a.IN_FEATURE not in input_shape:
        raise KeyError(
            f"MODEL.SEM_SEG_HEAD.AUX_HEAD.IN_FEATURE={a.IN_FEATURE!r} is not an output of the "
            f"backbone, which has {sorted(input_shape)}"
        )
    shape = input_shape[a.IN_FEATURE]
    return AuxiliaryFCNHead(
        a.IN_FEATURE,
        shape.channels,
        shape.stride,
        num_classes=h.NUM_CLASSES,
        conv_dims=a.CONVS_DIM,
        num_convs=a.NUM_CONVS,
        norm=h.NORM,
        dropout=a.DROPOUT,
        loss_weight=a.LOSS_WEIGHT,
    )
