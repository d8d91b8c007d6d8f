"""AdaptiveAvgPool2d as two averaging matrices built from the input size, so that tracing keeps
the height and width dynamic (torch's ONNX exporter rejects adaptive_avg_pool2d when the input
size is not a known multiple of the output size: UPerNet's pyramid pooling, scales 2, 3, 6).

Bin i of n inputs pooled to o outputs covers [floor(i n / o), ceil((i + 1) n / o)), as torch's
adaptive pooling: the same average, summed in another order.
"""

import torch
from torch import nn

__all__ = ["MatrixAdaptiveAvgPool2d"]


def _averaging_matrix(n: torch.Tensor, o: int, like: torch.Tensor) -> torch.Tensor:
    """(o, n) rows that average bin i of n inputs; n may be a traced size."""
    i = torch.arange(o, device=like.device)
    start = torch.div(i * n, o, rounding_mode="floor")
    end = torch.div((i + 1) * n + o - 1, o, rounding_mode="floor")
    j = torch.arange(n, device=like.device)
    inside = ((j[None] >= start[:, None]) & (j[None] < end[:, None])).to(like.dtype)
    return inside / inside.sum(1, keepdim=True)


class MatrixAdaptiveAvgPool2d(nn.Module):
    def __init__(self, output_size):
        super().__init__()
        size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
        if any(s is None for s in size):
            raise ValueError(
                f"MatrixAdaptiveAvgPool2d needs an explicit output size, got {output_size}"
            )
        self.output_size = tuple(int(s) for s in size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, o_h, o_w)."""
        rows = _averaging_matrix(torch.as_tensor(x.shape[-2]), self.output_size[0], x)
        cols = _averaging_matrix(torch.as_tensor(x.shape[-1]), self.output_size[1], x)
        return torch.einsum("ph,bchw,qw->bcpq", rows, x, cols)

    def extra_repr(self):
        return f"output_size={self.output_size}"
