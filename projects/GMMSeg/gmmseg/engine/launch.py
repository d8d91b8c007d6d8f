"""Running under torchrun (environment-variable initialisation) instead of detectron2's launch()."""
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from detectron2.utils import comm

__all__ = ["main_from_torchrun"]


def main_from_torchrun(main_fn, args, timeout_minutes: int = 30):
    """Initialise the process group from torchrun's RANK/WORLD_SIZE/MASTER_* variables, set up
    detectron2's per-machine process group as its launch() does, then run main_fn(args)."""
    has_gpu = torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if has_gpu else "gloo", init_method="env://",
                            timeout=timedelta(minutes=timeout_minutes))
    comm.create_local_process_group(int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())))
    if has_gpu:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    comm.synchronize()
    try:
        return main_fn(args)
    finally:
        dist.destroy_process_group()
