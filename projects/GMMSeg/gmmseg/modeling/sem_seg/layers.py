"""Small building blocks shared by the decoders of the model zoo."""

from typing import List

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.layers import Conv2d, get_norm
from torch import nn
from torch.nn import functional as F

__all__ = ["conv_norm_relu", "resize_concat", "output_dropout"]


def conv_norm_relu(
    in_channels: int, out_channels: int, kernel_size: int = 1, *, norm: str = "", dilation: int = 1
) -> Conv2d:
    """A "same"-padded conv -> norm -> ReLU (detectron2 Conv2d; no bias when normalised)."""
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        padding=dilation * (kernel_size // 2),
        dilation=dilation,
        bias=not norm,
        norm=get_norm(norm, out_channels),
        activation=F.relu,
    )
    weight_init.c2_xavier_fill(conv)
    return conv


def resize_concat(features: List[torch.Tensor]) -> torch.Tensor:
    """Bilinearly resize every map (B, C_i, h_i, w_i) to the first one's size; concat channels."""
    size = features[0].shape[-2:]
    resized = [features[0]] + [
        F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]
    ]
    return torch.cat(resized, dim=1)


def output_dropout(p: float) -> nn.Module:
    """Dropout2d before the predictor (p = 0: identity)."""
    return nn.Dropout2d(p) if p > 0 else nn.Identity()
