"""MODEL.CHANNELS_LAST: the network's 4-D weights and the backbone's input in channels-last
(NHWC) memory layout. The same computation up to float rounding; oneDNN's CPU convolutions (and
cuDNN's under mixed precision) run faster on it (docs/BENCHMARKS.md has the measured ratio)."""

import torch
from torch import nn

__all__ = ["use_channels_last"]


def _input_to_channels_last(module, args):
    x = args[0]
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def use_channels_last(model: nn.Module) -> nn.Module:
    """Convert `model`'s 4-D parameters and buffers to channels-last and make `model.backbone`
    receive its images in that layout; later layers keep it. Loading a checkpoint copies into
    these tensors and keeps their layout; checkpoints stay loadable by either layout."""
    model.to(memory_format=torch.channels_last)
    model.backbone.register_forward_pre_hook(_input_to_channels_last)
    return model
