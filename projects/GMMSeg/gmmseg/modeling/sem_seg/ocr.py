"""OCRDecoder: object-contextual representations (Yuan et al., OCRNet), as used on HRNetV2.

    x      = resize_concat(features[IN_FEATURES])          (B, C_in, h, w)  HRNetV2: 720 ch, stride 4
    coarse = 1x1 conv-norm-ReLU -> 1x1 linear classifier   (B, K, h, w)     soft object regions
    f      = 3x3 conv-norm-ReLU(x)                         (B, C, h, w)     pixel representations
    R      = softmax over pixels of coarse, per class       (B, K, hw)
    r_k    = sum_p R[k, p] f[:, p]                          (B, K, C)        object region centres
    w      = softmax_k( q(f_p) . k(r_k) / sqrt(C_key) )     (B, hw, K)       pixel-region relation
    ctx    = up( sum_k w[p, k] v(r_k) )                     (B, C, h, w)     object context
    out    = 1x1 conv-norm-ReLU(concat[ctx, f]) -> Dropout  (B, C, h, w)

q and k are two 1x1 conv-norm-ReLU layers each, v and up one each (C <-> C_key).

The coarse classifier needs the labels: forward returns (out, {"ocr_aux": coarse}) and the
decoder's `aux_loss_weights` = {"ocr_aux": AUX_LOSS_WEIGHT}; PerPixelHead adds
loss_ocr_aux = weight * cross-entropy(coarse upsampled to the labels) in training and ignores
the coarse logits at inference. The coarse classifier is always a linear (softmax) one, whatever
the predictor of the main output.
"""

from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from torch import nn
from torch.nn import functional as F

from .decoders import DECODER_REGISTRY, select_features
from .layers import conv_norm_relu, output_dropout, resize_concat

__all__ = ["OCRDecoder", "ObjectContextBlock"]


class ObjectContextBlock(nn.Module):
    """Pixel features + soft object regions -> object-contextual representation (same shape)."""

    def __init__(self, channels: int, key_channels: int, *, norm: str = "", scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.query = nn.Sequential(
            conv_norm_relu(channels, key_channels, norm=norm),
            conv_norm_relu(key_channels, key_channels, norm=norm),
        )
        self.key = nn.Sequential(
            conv_norm_relu(channels, key_channels, norm=norm),
            conv_norm_relu(key_channels, key_channels, norm=norm),
        )
        self.value = conv_norm_relu(channels, key_channels, norm=norm)
        self.up = conv_norm_relu(key_channels, channels, norm=norm)
        self.fuse = conv_norm_relu(2 * channels, channels, norm=norm)

    def forward(self, feats: torch.Tensor, region_logits: torch.Tensor) -> torch.Tensor:
        """feats: (B, C, h, w); region_logits: (B, K, h, w) -> (B, C, h, w)."""
        b, c, h, w = feats.shape
        regions = F.softmax(self.scale * region_logits.flatten(2), dim=2)  # (B, K, hw)
        centres = torch.bmm(regions, feats.flatten(2).transpose(1, 2))  # (B, K, C)
        centres = centres.transpose(1, 2).unsqueeze(-1)  # (B, C, K, 1)
        q = self.query(feats).flatten(2).transpose(1, 2)  # (B, hw, Ck)
        k = self.key(centres).flatten(2)  # (B, Ck, K)
        v = self.value(centres).flatten(2).transpose(1, 2)  # (B, K, Ck)
        relation = F.softmax(torch.bmm(q, k) * q.shape[-1] ** -0.5, dim=-1)  # (B, hw, K)
        context = torch.bmm(relation, v).transpose(1, 2).reshape(b, -1, h, w)  # (B, Ck, h, w)
        return self.fuse(torch.cat([self.up(context), feats], dim=1))


@DECODER_REGISTRY.register()
class OCRDecoder(nn.Module):
    """OCR head over one or several inputs (HRNetV2: all four branches, resized and concatenated)."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        conv_dims: int,
        key_channels: int = 256,
        aux_conv_dims: int = 0,
        aux_loss_weight: float = 0.4,
        scale: float = 1.0,
        norm: str = "",
        dropout: float = 0.0,
    ):
        """
        Args:
            input_shape: the input features; all are resized to the first one (the finest).
            num_classes: K, the classes of the coarse classifier (the soft object regions).
            conv_dims: C, channels of the pixel representations and of the output.
            key_channels: channels of the attention between pixels and object regions.
            aux_conv_dims: channels of the coarse classifier's conv (0: the concatenated input's).
            aux_loss_weight: weight of the coarse classifier's cross-entropy (PerPixelHead adds it).
        """
        super().__init__()
        self.in_features = list(input_shape)
        in_channels = sum(s.channels for s in input_shape.values())
        aux_conv_dims = aux_conv_dims or in_channels
        self.coarse = nn.Sequential(
            conv_norm_relu(in_channels, aux_conv_dims, norm=norm),
            Conv2d(aux_conv_dims, num_classes, 1),
        )
        nn.init.normal_(self.coarse[1].weight, std=0.01)
        nn.init.zeros_(self.coarse[1].bias)
        self.bottleneck = conv_norm_relu(in_channels, conv_dims, 3, norm=norm)
        self.object_context = ObjectContextBlock(conv_dims, key_channels, norm=norm, scale=scale)
        self.dropout = output_dropout(dropout)
        self.aux_loss_weights = {"ocr_aux": aux_loss_weight}
        self.out_channels = conv_dims
        self.common_stride = input_shape[self.in_features[0]].stride

    @classmethod
    def from_config(cls, cfg, input_shape):
        h = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": select_features(cfg, input_shape),
            "num_classes": h.NUM_CLASSES,
            "conv_dims": h.CONVS_DIM,
            "key_channels": h.OCR.KEY_CHANNELS,
            "aux_conv_dims": h.OCR.AUX_CONVS_DIM,
            "aux_loss_weight": h.OCR.AUX_LOSS_WEIGHT,
            "scale": h.OCR.SCALE,
            "norm": h.NORM,
            "dropout": h.DECODER_DROPOUT,
        }

    def forward(self, features):
        """-> (out (B, C, h, w), {"ocr_aux": coarse logits (B, K, h, w)})."""
        x = resize_concat([features[f] for f in self.in_features])
        coarse = self.coarse(x)
        out = self.object_context(self.bottleneck(x), coarse)
        return self.dropout(out), {"ocr_aux": coarse}
