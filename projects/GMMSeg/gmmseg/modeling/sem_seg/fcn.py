"""FCNDecoder: the FCN head (Long et al.) as MMSegmentation configures it for dilated ResNets.

x = features[IN_FEATURES[0]]                     (B, C_in, H/s, W/s), s = 8 for ResNet-D8
y = NUM_CONVS x [conv k x k (dilation) -> norm -> ReLU]   (B, C, H/s, W/s)
y = conv k x k(concat[x, y]) -> norm -> ReLU     if CONCAT_INPUT
y = Dropout2d(y)                                 (before the predictor)
"""

from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import nn

from .decoders import DECODER_REGISTRY, select_features
from .layers import conv_norm_relu, output_dropout

__all__ = ["FCNDecoder"]


@DECODER_REGISTRY.register()
class FCNDecoder(nn.Module):
    """Convs on one feature map (the last stage), optionally fused with their own input."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        conv_dims: int,
        num_convs: int = 2,
        kernel_size: int = 3,
        dilation: int = 1,
        concat_input: bool = True,
        norm: str = "",
        dropout: float = 0.0,
    ):
        """
        Args:
            input_shape: exactly one feature, {name: ShapeSpec(channels, stride)}.
            conv_dims: output channels C of every conv.
            num_convs: convs in the stack (0 only with concat_input=False and C_in == C).
            concat_input: concat the input with the stack's output and fuse with one more conv.
        """
        super().__init__()
        if len(input_shape) != 1:
            raise ValueError(
                f"FCNDecoder takes one input feature, got {sorted(input_shape)} (MODEL.SEM_SEG_HEAD.IN_FEATURES)"
            )
        ((self.in_feature, shape),) = input_shape.items()
        if num_convs == 0 and (concat_input or shape.channels != conv_dims):
            raise ValueError(
                "FCNDecoder with num_convs=0 needs concat_input=False and in_channels == conv_dims"
            )
        convs, c = [], shape.channels
        for _ in range(num_convs):
            convs.append(conv_norm_relu(c, conv_dims, kernel_size, norm=norm, dilation=dilation))
            c = conv_dims
        self.convs = nn.Sequential(*convs)
        self.fuse = (
            conv_norm_relu(shape.channels + conv_dims, conv_dims, kernel_size, norm=norm)
            if concat_input
            else None
        )
        self.dropout = output_dropout(dropout)
        self.out_channels, self.common_stride = conv_dims, shape.stride

    @classmethod
    def from_config(cls, cfg, input_shape):
        h = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": select_features(cfg, input_shape),
            "conv_dims": h.CONVS_DIM,
            "num_convs": h.FCN.NUM_CONVS,
            "kernel_size": h.FCN.KERNEL_SIZE,
            "dilation": h.FCN.DILATION,
            "concat_input": h.FCN.CONCAT_INPUT,
            "norm": h.NORM,
            "dropout": h.DECODER_DROPOUT,
        }

    def forward(self, features):
        x = features[self.in_feature]
        y = self.convs(x)
        if self.fuse is not None:
            y = self.fuse(torch.cat([x, y], dim=1))
        return self.dropout(y)
