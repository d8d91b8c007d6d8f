"""Sine positional encoding of a feature map (the DETR / Mask2Former variant, normalised)."""

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """(B, C, H, W) -> (B, 2 * num_pos_feats, H, W): channels [y encodings, x encodings].

    Row/column indices 1..H and 1..W are divided by H and W and multiplied by 2 pi; each is then
    encoded as interleaved sin/cos at frequencies temperature ** (2 floor(i / 2) / num_pos_feats).
    No parameters; only the shape (and device) of the input matters.
    """

    def __init__(
        self, num_pos_feats: int = 64, temperature: float = 10000.0, scale: float = 2 * math.pi
    ):
        super().__init__()
        self.num_pos_feats, self.temperature, self.scale = num_pos_feats, temperature, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        eps = 1e-6
        ys = torch.arange(1, h + 1, dtype=torch.float32, device=x.device) / (h + eps) * self.scale
        xs = torch.arange(1, w + 1, dtype=torch.float32, device=x.device) / (w + eps) * self.scale
        i = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        freq = self.temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / self.num_pos_feats)

        def encode(v):  # (L,) -> (L, num_pos_feats), sin on even, cos on odd channels
            a = v[:, None] / freq
            return torch.stack([a[:, 0::2].sin(), a[:, 1::2].cos()], dim=2).flatten(1)

        pos_y = encode(ys)[:, None, :].expand(h, w, -1)
        pos_x = encode(xs)[None, :, :].expand(h, w, -1)
        pos = torch.cat([pos_y, pos_x], dim=2).permute(2, 0, 1)
        return pos.unsqueeze(0).expand(b, -1, -1, -1)  # float32, whatever the input dtype

    def extra_repr(self):
        return f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}"
