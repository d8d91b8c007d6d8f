"""The compiled multi-scale deformable attention op of the official Mask2Former / Deformable DETR
release, used when it is installed and the values are on a GPU.

That release builds a CUDA extension importable as `MultiScaleDeformableAttention`, with
`ms_deform_attn_forward(value, spatial_shapes, level_start_index, sampling_locations,
attention_weights, im2col_step)` and the matching `ms_deform_attn_backward(..., grad_output,
im2col_step)` returning the gradients of value, sampling_locations and attention_weights. This
project does not build it. `deform_attn(...)` takes the same arguments as the PyTorch path
(pixel_decoder.ms_deform_attn_sample) and picks the op when `compiled_op()` finds it and the value
is a float32 / float64 CUDA tensor, else the PyTorch path; which one runs is logged once per
process and kind.

NOT RUN YET: no machine with the extension and a GPU was available when it was written;
tests/test_deform_attn_op.py compares both paths there and is skipped without them.
"""

import importlib
import logging

import torch
from torch.autograd.function import once_differentiable

__all__ = ["compiled_op", "uses_compiled_op", "deform_attn"]

logger = logging.getLogger(__name__)
_MODULE = "MultiScaleDeformableAttention"
_IM2COL_STEP = 64  # the release's default: images per kernel launch chunk
_op = ...  # not looked up yet
_logged = set()


def compiled_op():
    """The compiled extension module, or None when it does not import (looked up once)."""
    global _op
    if _op is ...:
        try:
            _op = importlib.import_module(_MODULE)
        except ImportError:
            _op = None
    return _op


def uses_compiled_op(value: torch.Tensor) -> bool:
    """True when `deform_attn` runs the compiled op for this value tensor (never while tracing for
    export: an exported model holds the PyTorch path, which needs no extension)."""
    return (
        value.is_cuda
        and value.dtype in (torch.float32, torch.float64)
        and not torch.jit.is_tracing()
        and compiled_op() is not None
    )


def _log_once(kind: str, message: str):
    if kind not in _logged:
        _logged.add(kind)
        logger.info(message)


class _CompiledDeformAttn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, shapes, level_start, locations, weights):
        ctx.save_for_backward(value, shapes, level_start, locations, weights)
        return compiled_op().ms_deform_attn_forward(
            value, shapes, level_start, locations, weights, _IM2COL_STEP
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        value, shapes, level_start, locations, weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = compiled_op().ms_deform_attn_backward(
            value, shapes, level_start, locations, weights, grad_output.contiguous(), _IM2COL_STEP
        )
        return grad_value, None, None, grad_locations, grad_weights


def deform_attn(value, spatial_shapes, sampling_locations, attention_weights, pytorch_path):
    """Multi-scale deformable attention with the arguments of pixel_decoder.ms_deform_attn_sample
    (`pytorch_path`, called when the compiled op is not used); returns (B, Lq, nH * Dh)."""
    if not uses_compiled_op(value):
        why = (
            "not installed"
            if compiled_op() is None
            else "tracing"
            if torch.jit.is_tracing()
            else f"values on {value.device.type}, {value.dtype}"
        )
        _log_once(
            "pytorch",
            f"Multi-scale deformable attention: PyTorch grid_sample path ({_MODULE} {why})",
        )
        return pytorch_path(value, spatial_shapes, sampling_locations, attention_weights)
    _log_once("compiled", f"Multi-scale deformable attention: the compiled {_MODULE} op")
    shapes = torch.as_tensor(spatial_shapes, dtype=torch.long, device=value.device)
    level_start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    return _CompiledDeformAttn.apply(
        value.contiguous(),
        shapes,
        level_start,
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
    )
