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
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        conv_dims: int,
        norm: str = "",
        dropout: float = 0.0,
    ):
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
        return {
            "input_shape": select_features(cfg, input_shape),
            "conv_dims": h.CONVS_DIM,
            "norm": h.NORM,
            "dropout": h.DECODER_DROPOUT,
        }

    def forward(self, features):
        # fuse(concat_i up(L_i x_i)) computed as sum_i up(F_i L_i x_i): bilinear resizing acts on each
        # channel alone with weights that sum to 1 and a 1x1 conv only mixes channels, so the two
        # commute (bias included). The same function and parameters, up to float rounding, without the
        # (B, n C, H/4, W/4) concat and the n C -> C conv at the finest stride: each stage's two linear
        # maps are composed into one C_i -> C conv applied at its own resolution.
        xs = [features[f] for f in self.in_features]
        size = xs[0].shape[-2:]
        fuse = self.fuse
        # the concat is coarsest first: block j of the fuse weight acts on stage n - 1 - j
        blocks = fuse.weight.flatten(1).split(self.out_channels, dim=1)[::-1]
        out = fuse.bias.view(1, -1, 1, 1) if fuse.bias is not None else None
        for x, layer, block in zip(xs, self.linear, blocks):
            y = F.conv2d(x, (block @ layer.weight.flatten(1))[..., None, None], block @ layer.bias)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        if fuse.norm is not None:
            out = fuse.norm(out)
        if fuse.activation is not None:
            out = fuse.activation(out)
        return self.dropout(out)

    def forward_concat(self, features):
        """The decoder as SegFormer writes it (concat, then the fuse conv at the finest stride): what
        `forward` computes, in the slower order; the reference of the tests and of
        benchmarks/bench_train_step.py."""
        xs = [features[f] for f in self.in_features]
        size = xs[0].shape[-2:]
        embeds = [layer(x) for layer, x in zip(self.linear, xs)]
        embeds = [embeds[0]] + [
            F.interpolate(e, size=size, mode="bilinear", align_corners=False) for e in embeds[1:]
        ]
        return self.dropout(self.fuse(torch.cat(embeds[::-1], dim=1)))
