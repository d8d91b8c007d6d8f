"""Mask2Former's pixel decoder: a multi-scale deformable-attention encoder over res3..res5 and an
FPN-style top-down path to the mask-feature resolution (stride COMMON_STRIDE, 4).

Multi-scale deformable attention (Deformable DETR) is computed here in pure PyTorch with
`grid_sample`, so it runs on the CPU and needs no compiled extension (on a GPU the release's
compiled op is used when installed, deform_attn_op.py); its parameters are the
ones of the CUDA-kernel module (sampling_offsets, attention_weights, value_proj, output_proj), so
checkpoints are interchangeable. Module and parameter names follow the official release
(`input_proj`, `transformer.encoder.layers.*`, `transformer.level_embed`, `mask_features`,
`adapter_1`, `layer_1`).
"""

import math
from typing import Dict, List, Sequence, Tuple

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn
from torch.nn import functional as F

from .deform_attn_op import deform_attn
from .position_encoding import PositionEmbeddingSine

__all__ = [
    "MSDeformAttn",
    "ms_deform_attn_sample",
    "MSDeformAttnPixelDecoder",
    "build_pixel_decoder",
]


def ms_deform_attn_sample(
    value: torch.Tensor,
    spatial_shapes: Sequence[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The core of multi-scale deformable attention, in PyTorch.

    value: (B, S, nH, Dh), the L levels flattened and concatenated, S = sum_l H_l * W_l;
    spatial_shapes: L pairs (H_l, W_l);
    sampling_locations: (B, Lq, nH, L, P, 2), (x, y) in [0, 1] (outside: zero padding);
    attention_weights: (B, Lq, nH, L, P).
    Returns (B, Lq, nH * Dh): per head, the attention-weighted sum of the bilinearly sampled values.
    """
    b, _, nh, dh = value.shape
    _, lq, _, nl, npts, _ = sampling_locations.shape
    values = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2.0 * sampling_locations - 1.0  # grid_sample's [-1, 1] convention
    out = None
    for lvl, (h, w) in enumerate(spatial_shapes):
        v = values[lvl].permute(0, 2, 3, 1).reshape(b * nh, dh, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(b * nh, lq, npts, 2)
        sampled = F.grid_sample(
            v, g, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (B nH, Dh, Lq, P)
        a = attention_weights[:, :, :, lvl].transpose(1, 2).reshape(b * nh, 1, lq, npts)
        part = (sampled * a).sum(-1)
        out = part if out is None else out + part
    return out.view(b, nh * dh, lq).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: every query attends to n_points sampled locations per
    head and level, around its reference point, with offsets and weights predicted from the query.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(
                f"MSDeformAttn: d_model ({d_model}) must be divisible by n_heads ({n_heads})"
            )
        self.d_model, self.n_levels, self.n_heads, self.n_points = (
            d_model,
            n_levels,
            n_heads,
            n_points,
        )
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self):
        # Offsets start as a fixed pattern: head h looks along direction 2 pi h / n_heads, its
        # k-th point k cells away (the direction scaled so its larger coordinate is 1).
        nn.init.zeros_(self.sampling_offsets.weight)
        angle = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        direction = torch.stack([angle.cos(), angle.sin()], -1)
        direction = direction / direction.abs().amax(-1, keepdim=True)
        steps = torch.arange(1, self.n_points + 1, dtype=torch.float32)
        bias = direction[:, None, None, :] * steps[None, None, :, None]  # (nH, 1, P, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.expand(-1, self.n_levels, -1, -1).reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query, reference_points, value_input, spatial_shapes, padding_mask=None):
        """query: (B, Lq, C); reference_points: (B or 1, Lq, L, 2), (x, y) in [0, 1];
        value_input: (B, S, C); spatial_shapes: L pairs (H_l, W_l); padding_mask: (B, S) bool or
        None (True = padding, its values are zeroed). Returns (B, Lq, C).
        """
        b, lq, _ = query.shape
        s = value_input.shape[1]
        if s != sum(h * w for h, w in spatial_shapes):
            raise ValueError(
                f"MSDeformAttn: value has {s} positions, spatial_shapes {list(spatial_shapes)} "
                f"sum to {sum(h * w for h, w in spatial_shapes)}"
            )
        value = self.value_proj(value_input)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(b, s, self.n_heads, self.d_model // self.n_heads)
        nh, nl, npts = self.n_heads, self.n_levels, self.n_points
        offsets = self.sampling_offsets(query).view(b, lq, nh, nl, npts, 2)
        weights = (
            self.attention_weights(query)
            .view(b, lq, nh, nl * npts)
            .softmax(-1)
            .view(b, lq, nh, nl, npts)
        )
        # offsets are in cells of each level: divide by (W_l, H_l) to get normalised coordinates
        normalizer = torch.tensor(
            [[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device
        )
        locations = (
            reference_points[:, :, None, :, None, :]
            + offsets / normalizer[None, None, None, :, None, :]
        )
        # the compiled op of the official release when installed and on a GPU (deform_attn_op.py)
        return self.output_proj(
            deform_attn(value, spatial_shapes, locations, weights, ms_deform_attn_sample)
        )


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention over all levels, then an FFN."""

    def __init__(self, d_model=256, d_ffn=1024, dropout=0.1, n_levels=4, n_heads=8, n_points=4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, padding_mask=None):
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, padding_mask)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class MSDeformAttnTransformerEncoder(nn.Module):
    def __init__(self, layers: List[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    @staticmethod
    def reference_points(spatial_shapes, num_levels: int, device) -> torch.Tensor:
        """Pixel centres of every level in normalised (x, y), the same point for every level:
        (1, S, L, 2). (No padding mask, so the valid ratios are all 1.)"""
        refs = []
        for h, w in spatial_shapes:
            y = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
            x = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
            yy, xx = torch.meshgrid(y, x, indexing="ij")
            refs.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], -1))
        return torch.cat(refs, 0)[None, :, None, :].expand(-1, -1, num_levels, -1)

    def forward(self, src, pos, spatial_shapes, padding_mask=None):
        ref = self.reference_points(spatial_shapes, len(spatial_shapes), src.device)
        for layer in self.layers:
            src = layer(src, pos, ref, spatial_shapes, padding_mask)
        return src


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Flattens L feature maps, adds the positional + level embeddings, runs the encoder."""

    def __init__(
        self,
        d_model=256,
        nhead=8,
        num_encoder_layers=6,
        dim_feedforward=1024,
        dropout=0.1,
        num_feature_levels=4,
        enc_n_points=4,
    ):
        super().__init__()
        self.d_model = d_model
        self.encoder = MSDeformAttnTransformerEncoder(
            [
                MSDeformAttnTransformerEncoderLayer(
                    d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points
                )
                for _ in range(num_encoder_layers)
            ]
        )
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: List[torch.Tensor], pos_embeds: List[torch.Tensor]):
        """srcs, pos_embeds: L tensors (B, C, H_l, W_l). Returns ((B, S, C), [(H_l, W_l)])."""
        shapes = [(int(s.shape[2]), int(s.shape[3])) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                for lvl, p in enumerate(pos_embeds)
            ],
            1,
        )
        return self.encoder(src, pos, shapes), shapes


@SEM_SEG_HEADS_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """backbone features -> (mask features (B, mask_dim, H/4, W/4), the encoder's lowest-resolution
    output, the 3 lowest-resolution maps for the transformer decoder, lowest resolution first)."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: str = "GN",
        transformer_in_features: List[str],
        common_stride: int,
        transformer_n_points: int = 4,
    ):
        super().__init__()
        missing = [f for f in transformer_in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MSDeformAttnPixelDecoder: DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES {missing} are "
                f"not among the decoder's input features {sorted(input_shape)}"
            )
        by_stride = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in by_stride]  # high to low resolution
        enc = [(k, v) for k, v in by_stride if k in transformer_in_features]
        self.transformer_in_features = [k for k, _ in enc]
        self.transformer_feature_strides = [v.stride for _, v in enc]
        self.transformer_num_feature_levels = len(enc)
        # one projection per encoder level, from low to high resolution (res5 first)
        self.input_proj = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(v.channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim)
            )
            for _, v in reversed(enc)
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            nhead=transformer_nheads,
            num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward,
            dropout=transformer_dropout,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2)
        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.mask_features)
        self.maskformer_num_feature_levels = 3  # the transformer decoder always uses 3 scales
        self.common_stride = common_stride
        # FPN levels between the finest encoder level and the mask-feature stride
        self.num_fpn_levels = max(
            0, int(round(math.log2(min(self.transformer_feature_strides) / common_stride)))
        )
        if (
            self.transformer_num_feature_levels + self.num_fpn_levels
            < self.maskformer_num_feature_levels
        ):
            raise ValueError(
                "MSDeformAttnPixelDecoder: the encoder and FPN levels give fewer than the 3 scales "
                "the transformer decoder attends to; add encoder in-features"
            )
        use_bias = norm == ""
        lateral, output = [], []
        for idx, name in enumerate(self.in_features[: self.num_fpn_levels]):
            lateral_conv = Conv2d(
                input_shape[name].channels,
                conv_dim,
                kernel_size=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
            )
            output_conv = Conv2d(
                conv_dim,
                conv_dim,
                kernel_size=3,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
                activation=F.relu,
            )
            weight_init.c2_xavier_fill(lateral_conv)
            weight_init.c2_xavier_fill(output_conv)
            self.add_module(f"adapter_{idx + 1}", lateral_conv)  # the release's names
            self.add_module(f"layer_{idx + 1}", output_conv)
            lateral.append(lateral_conv)
            output.append(output_conv)
        # plain lists (already registered above), in top-down order: low to high resolution
        self.lateral_convs, self.output_convs = lateral[::-1], output[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        h = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in h.IN_FEATURES},
            "conv_dim": h.CONVS_DIM,
            "mask_dim": h.MASK_DIM,
            "norm": h.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "transformer_dim_feedforward": h.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD,
            "transformer_enc_layers": h.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": list(h.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
            "transformer_n_points": h.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
            "common_stride": h.COMMON_STRIDE,
        }

    def forward_features(self, features: Dict[str, torch.Tensor]):
        # deformable attention samples with grid_sample: kept in float32 under autocast
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward_features({k: v.float() for k, v in features.items()})

    def _forward_features(self, features):
        srcs, pos = [], []
        for idx, name in enumerate(
            reversed(self.transformer_in_features)
        ):  # low to high resolution
            x = features[name]
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        y, shapes = self.transformer(srcs, pos)
        b = y.shape[0]
        outs = [
            z.transpose(1, 2).reshape(b, -1, h, w)
            for z, (h, w) in zip(y.split([h * w for h, w in shapes], dim=1), shapes)
        ]
        for idx, name in enumerate(reversed(self.in_features[: self.num_fpn_levels])):
            lateral = self.lateral_convs[idx](features[name])
            top_down = F.interpolate(
                outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False
            )
            outs.append(self.output_convs[idx](lateral + top_down))
        multi_scale_features = outs[: self.maskformer_num_feature_levels]
        return self.mask_features(outs[-1]), outs[0], multi_scale_features

    def forward(self, features):
        raise NotImplementedError(
            "MSDeformAttnPixelDecoder is used through forward_features() by MaskFormerHead"
        )


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """The pixel decoder named by MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME (SEM_SEG_HEADS_REGISTRY)."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    if name not in SEM_SEG_HEADS_REGISTRY:
        raise KeyError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} is not registered; this project "
            f"implements 'MSDeformAttnPixelDecoder'"
        )
    model = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} has no forward_features(); use 'MSDeformAttnPixelDecoder'"
        )
    return model
