"""Where a GMM's feature memory lives (MODEL.GMM.MEMORY_LAYOUT): the one place that reads the layout.

- "replicated": every rank holds the whole bank (memory.py);
- "sharded": each of the W ranks holds every W-th slot of every ring (sharded_memory.py): the same
  rows and the same M-step, bank / W per rank;
- "none": no bank (inference_memory.py): a model built for inference, which reads means and stds only;
- "auto": "sharded" when several processes train (torch.distributed initialised with W > 1),
  else "replicated".
A memory of capacity 0 (the batch-only ablation) has no rows to spread: it is always replicated.
"""

import torch

from .distributed import world_size
from .inference_memory import InferenceMemory
from .memory import FeatureMemory
from .sharded_memory import ShardedFeatureMemory

__all__ = ["MEMORY_LAYOUTS", "resolve_memory_layout", "build_memory"]

MEMORY_LAYOUTS = ("auto", "replicated", "sharded", "none")


def resolve_memory_layout(layout: str) -> str:
    """The layout this process uses: "auto" resolved by the number of training processes."""
    if layout not in MEMORY_LAYOUTS:
        raise ValueError(
            f"memory layout (MODEL.GMM.MEMORY_LAYOUT) must be one of {list(MEMORY_LAYOUTS)}, got {layout!r}"
        )
    if layout == "auto":
        return "sharded" if world_size() > 1 else "replicated"
    return layout


def build_memory(
    layout: str,
    num_groups: int,
    capacity: int,
    dim: int,
    *,
    init: str = "random",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    device=None,
):
    """The feature memory of `num_groups` rings of `capacity` rows of size `dim` in `layout`."""
    layout = resolve_memory_layout(layout)
    if layout == "none":
        return InferenceMemory(num_groups, capacity, dim)
    kind = ShardedFeatureMemory if layout == "sharded" and capacity > 0 else FeatureMemory
    return kind(num_groups, capacity, dim, init=init, dtype=dtype, seed=seed, device=device)
