"""UPerNetDecoder: pyramid pooling on the coarsest feature + FPN fusion (Xiao et al., UPerNet).

    inputs x_1..x_n (finest first), e.g. Swin stages at strides 4, 8, 16, 32
    top     = 3x3 conv(concat[x_n, up(1x1 conv(avgpool_s(x_n))) for s in POOL_SCALES])  (PPM)
    lat_i   = 1x1 conv(x_i) for i < n;  lat_n = top
    lat_i  += up(lat_{i+1})        for i = n-1 .. 1   (top-down path)
    p_i     = 3x3 conv(lat_i) for i < n;  p_n = top
    out     = 3x3 conv(concat[up(p_i) to the finest size]) -> Dropout   (B, C, H/s_1, W/s_1)

Every conv is conv-norm-ReLU with C = CONVS_DIM channels. With BatchNorm, the 1x1 pooled branch
needs more than one image per batch in training (as any PPM).
"""

from typing import Dict, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import nn
from torch.nn import functional as F

from .decoders import DECODER_REGISTRY, select_features
from .layers import conv_norm_relu, output_dropout

__all__ = ["UPerNetDecoder", "PyramidPooling"]


def _resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module followed by a 3x3 bottleneck: (B, C_in, h, w) -> (B, C, h, w)."""

    def __init__(
        self, in_channels: int, channels: int, pool_scales: Sequence[int], *, norm: str = ""
    ):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), conv_norm_relu(in_channels, channels, norm=norm))
            for s in pool_scales
        )
        self.bottleneck = conv_norm_relu(
            in_channels + len(pool_scales) * channels, channels, 3, norm=norm
        )

    def forward(self, x):
        size = x.shape[-2:]
        return self.bottleneck(torch.cat([x] + [_resize(b(x), size) for b in self.branches], dim=1))


@DECODER_REGISTRY.register()
class UPerNetDecoder(nn.Module):
    """PPM + FPN over several backbone features; the output is at the finest input's stride."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        conv_dims: int,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: str = "",
        dropout: float = 0.0,
    ):
        super().__init__()
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        if len(shapes) < 2:
            raise ValueError(
                f"UPerNetDecoder needs at least two input features, got {sorted(input_shape)}"
            )
        self.in_features = [name for name, _ in shapes]
        channels = [s.channels for _, s in shapes]
        self.ppm = PyramidPooling(channels[-1], conv_dims, pool_scales, norm=norm)
        self.lateral = nn.ModuleList(conv_norm_relu(c, conv_dims, norm=norm) for c in channels[:-1])
        self.smooth = nn.ModuleList(
            conv_norm_relu(conv_dims, conv_dims, 3, norm=norm) for _ in channels[:-1]
        )
        self.fuse = conv_norm_relu(len(channels) * conv_dims, conv_dims, 3, norm=norm)
        self.dropout = output_dropout(dropout)
        self.out_channels, self.common_stride = conv_dims, shapes[0][1].stride

    @classmethod
    def from_config(cls, cfg, input_shape):
        h = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": select_features(cfg, input_shape),
            "conv_dims": h.CONVS_DIM,
            "pool_scales": list(h.UPERNET.POOL_SCALES),
            "norm": h.NORM,
            "dropout": h.DECODER_DROPOUT,
        }

    def forward(self, features):
        xs = [features[f] for f in self.in_features]
        lats = [conv(x) for conv, x in zip(self.lateral, xs[:-1])] + [self.ppm(xs[-1])]
        for i in range(len(lats) - 2, -1, -1):
            lats[i] = lats[i] + _resize(lats[i + 1], lats[i].shape[-2:])
        outs = [conv(lat) for conv, lat in zip(self.smooth, lats[:-1])] + [lats[-1]]
        size = outs[0].shape[-2:]
        out = self.fuse(torch.cat([outs[0]] + [_resize(o, size) for o in outs[1:]], dim=1))
        return self.dropout(out)
