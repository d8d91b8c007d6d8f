"""Multi-scale deformable attention in PyTorch (vs a naive bilinear loop), the pixel decoder's shapes."""

import math

import torch
from detectron2.layers import ShapeSpec

from gmmseg.modeling.mask_former import (
    MSDeformAttn,
    MSDeformAttnPixelDecoder,
    ms_deform_attn_sample,
)
from gmmseg.modeling.mask_former.position_encoding import PositionEmbeddingSine


def _bilinear_zero_pad(img, x, y):
    """img (C, H, W); x, y normalised in [0, 1] (pixel centres at (i + 0.5) / size)."""
    c, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(c, dtype=torch.float64)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < h and 0 <= xx < w:
                out += img[:, yy, xx].double() * (1 - abs(px - xx)) * (1 - abs(py - yy))
    return out


def test_ms_deform_attn_sample_equals_naive_loop():
    g = torch.Generator().manual_seed(0)
    b, nh, dh, lq, npts = 2, 2, 3, 4, 3
    shapes = [(3, 4), (2, 2)]
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, nh, dh, generator=g)
    loc = (
        torch.rand(b, lq, nh, len(shapes), npts, 2, generator=g) * 1.4 - 0.2
    )  # some points outside
    attn = torch.rand(b, lq, nh, len(shapes), npts, generator=g)
    out = ms_deform_attn_sample(value, shapes, loc, attn)
    assert out.shape == (b, lq, nh * dh)
    starts = [0, shapes[0][0] * shapes[0][1]]
    for bi in range(b):
        for qi in range(lq):
            for hi in range(nh):
                ref = torch.zeros(dh, dtype=torch.float64)
                for li, (h, w) in enumerate(shapes):
                    img = value[bi, starts[li] : starts[li] + h * w, hi].T.reshape(dh, h, w)
                    for pi in range(npts):
                        x, y = loc[bi, qi, hi, li, pi].tolist()
                        ref += float(attn[bi, qi, hi, li, pi]) * _bilinear_zero_pad(img, x, y)
                assert torch.allclose(out[bi, qi, hi * dh : (hi + 1) * dh].double(), ref, atol=1e-5)


def test_ms_deform_attn_initial_pattern_and_gradients():
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=2)
    # initial offsets: head h along angle 2 pi h / 4, point k at k + 1 cells (larger coordinate 1)
    bias = attn.sampling_offsets.bias.view(4, 2, 2, 2)
    assert torch.allclose(bias[0, 0, 1], torch.tensor([2.0, 0.0]), atol=1e-6)
    assert torch.allclose(bias[1, 1, 0], torch.tensor([0.0, 1.0]), atol=1e-6)
    shapes = [(4, 4), (2, 2)]
    value = torch.randn(1, 20, 16, requires_grad=True)
    query = torch.randn(1, 5, 16, requires_grad=True)
    ref = torch.rand(1, 5, 2, 2)
    out = attn(query, ref, value, shapes)
    assert out.shape == (1, 5, 16)
    out.sum().backward()
    assert torch.isfinite(value.grad).all() and value.grad.abs().sum() > 0
    assert attn.sampling_offsets.weight.grad.abs().sum() > 0


def test_position_embedding():
    pe = PositionEmbeddingSine(8)(torch.zeros(2, 5, 3, 4))
    assert pe.shape == (2, 16, 3, 4)
    # first channel: sin of the normalised row index (1..H) / H * 2 pi
    assert torch.allclose(
        pe[0, 0, :, 0], torch.sin(torch.arange(1, 4) / 3 * 2 * math.pi), atol=1e-4
    )
    assert torch.allclose(
        pe[0, 8, 0, :], torch.sin(torch.arange(1, 5) / 4 * 2 * math.pi), atol=1e-4
    )


def test_pixel_decoder_shapes():
    shapes = {
        "res2": ShapeSpec(channels=8, stride=4),
        "res3": ShapeSpec(channels=16, stride=8),
        "res4": ShapeSpec(channels=24, stride=16),
        "res5": ShapeSpec(channels=32, stride=32),
    }
    dec = MSDeformAttnPixelDecoder(
        shapes,
        transformer_dropout=0.0,
        transformer_nheads=4,
        transformer_dim_feedforward=32,
        transformer_enc_layers=1,
        conv_dim=32,
        mask_dim=16,
        norm="GN",
        transformer_in_features=["res3", "res4", "res5"],
        common_stride=4,
    )
    feats = {
        k: torch.randn(2, v.channels, 64 // v.stride, 96 // v.stride) for k, v in shapes.items()
    }
    mask_features, encoder_out, multi_scale = dec.forward_features(feats)
    assert mask_features.shape == (2, 16, 16, 24)
    assert encoder_out.shape == (2, 32, 2, 3)
    assert [tuple(t.shape[-2:]) for t in multi_scale] == [(2, 3), (4, 6), (8, 12)]
    names = set(dict(dec.named_parameters()))
    assert {
        "adapter_1.weight",
        "layer_1.weight",
        "input_proj.0.0.weight",
        "transformer.level_embed",
    } <= names
