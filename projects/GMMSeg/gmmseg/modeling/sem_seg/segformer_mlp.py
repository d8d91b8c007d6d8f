"""SegFormerMLPDecoder: SegFormer's all-MLP decoder (Xie et al., 2021).

    inputs x_1..x_n (finest first), MiT: strides 4, 8, 16, 32
    e_i = Linear_i(x_i) per pixel (C_i -> C), upsampled bilinearly to the finest size
    out = 1x1 conv(concat[e_n, ..., e_1]) -> norm -> ReLU -> Dropout     (B, C, H/4, W/4)

The per-stage linear layers have a bias and no norm/activation, as in the SegFormer release
(MMSegmentation's port uses conv-norm-ReLU there instead). C = CONVS_DIM: 256 for MiT-B0/B1,
768 for MiT-B2..B5 in the paper.
"""
from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import nn
from torch.nn import functional as F

from .decoders import DECODER_REGISTRY, select_features
from .layers import conv_norm_relu, output_dropout

__all__ = ["SegFormerMLPDecoder"]


@DECODER_REGISTRY.register()
class SegFormerMLPDecoder(nn.Module):
    """Per-stage linear embeddings, upsampled to the finest stride, concatenated and fused."""

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, conv_dims: int, norm: str = "",
                 dropout: float = 0.0):
        super().__init__()
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [name for name, _ in shapes]
        self.linear = nn.ModuleList(nn.Conv2d(s.channels, conv_dims, 1) for _, s in shapes)
        for layer in self.linear:
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        self.fuse = conv_norm_relu(len(shapes) * conv_dims, conv_dims, norm=norm)
        self.dropout = output_dropout(dropout)
        self.out_channels, self.common_stride = conv_dims, shapes[0][1].stride

    @classmethod
    def from_config(cls, cfg, input_shape):
        h = cfg.MODEL.SEM_SEG_HEAD
        return {"input_shape": select_features(cfg, input_shape), "conv_dims": h.CONVS_DIM,
                "norm": h.NORM, "dropout": h.DECODER_DROPOUT}

    def forward(self, features):
        xs = [features[f] for f in self.in_features]
        size = xs[0].shape[-2:]
        embeds = [layer(x) for layer, x in zip(self.linear, xs)]
        embeds = [embeds[0]] + [F.interpolate(e, size=size, mode="bilinear", align_corners=False)
                                for e in embeds[1:]]
        return self.dropout(self.fuse(torch.cat(embeds[::-1], dim=1)))
