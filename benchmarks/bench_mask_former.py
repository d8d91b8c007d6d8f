#!/usr/bin/env python
"""Training-step and inference time of Mask2Former with the GMM class head vs the softmax one.

    python benchmarks/bench_mask_former.py                      # the demo models, CPU
    python benchmarks/bench_mask_former.py --size 512 512 --batch 2 \
        --softmax-config configs/ade20k/mask2former_R50_softmax.yaml \
        --gmm-config configs/ade20k/mask2former_R50_gmm.yaml MODEL.DEVICE cuda

Both models see the same synthetic batch (random images, label maps of a few rectangles). A
training step is forward + backward + optimizer step (+ for the GMM the EM hook's work: flush
every step, em_update every MODEL.GMM.UPDATE_INTERVAL steps); inference is the eval forward
(semantic inference, + the anomaly map for the GMM). The two models alternate step by step (a
change of machine load hits both); the median over --iters timed repetitions after --warmup is
reported, with the GMM / softmax ratios. Trailing KEY VALUE pairs override both
configs.
"""

import argparse
import os

import torch
from common import machine, table
from model_timing import time_models

from gmmseg import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SOFTMAX = os.path.join(ROOT, "configs/demo/mask2former_r18_softmax.yaml")
DEFAULT_GMM = os.path.join(ROOT, "configs/demo/mask2former_r18_gmm.yaml")


def load_cfg(path, opts):
    cfg = load_config(path, ["MODEL.WEIGHTS", ""] + list(opts))
    if cfg.MODEL.BACKBONE.NAME == "build_timm_backbone":
        cfg.merge_from_list(["MODEL.TIMM.PRETRAINED", False])  # nothing to download for timing
    return cfg


def synthetic_batch(n, size, num_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    batch = []
    for _ in range(n):
        label = torch.full(
            (h, w), int(torch.randint(0, num_classes, (1,), generator=g)), dtype=torch.long
        )
        for _ in range(4):
            y, x = (
                int(torch.randint(0, h // 2, (1,), generator=g)),
                int(torch.randint(0, w // 2, (1,), generator=g)),
            )
            label[y : y + h // 3, x : x + w // 3] = int(
                torch.randint(0, num_classes, (1,), generator=g)
            )
        batch.append({"image": torch.rand(3, h, w, generator=g) * 255, "sem_seg": label})
    return batch


def run(
    softmax_config=DEFAULT_SOFTMAX,
    gmm_config=DEFAULT_GMM,
    batch=8,
    size=(96, 128),
    warmup=2,
    iters=5,
    opts=(),
):
    """{"softmax": (train s, inference s), "gmm": (...)}: medians on one synthetic batch."""
    cfgs = {"softmax": load_cfg(softmax_config, opts), "gmm": load_cfg(gmm_config, opts)}
    data = synthetic_batch(batch, size, cfgs["softmax"].MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    return time_models(cfgs, data, warmup, iters)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--softmax-config", default=DEFAULT_SOFTMAX)
    p.add_argument("--gmm-config", default=DEFAULT_GMM)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for both configs")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run(
        args.softmax_config,
        args.gmm_config,
        args.batch,
        args.size,
        args.warmup,
        args.iters,
        args.opts,
    )
    (ts, is_), (tg, ig) = results["softmax"], results["gmm"]
    device = load_cfg(args.gmm_config, args.opts).MODEL.DEVICE
    print(
        f"Mask2Former, batch {args.batch} x {args.size[0]}x{args.size[1]}, device {device}, "
        f"median of {args.iters} after {args.warmup} warm-up; {machine()}"
    )
    print(
        table(
            [
                ["softmax", f"{ts * 1e3:.1f}", f"{is_ * 1e3:.1f}"],
                ["gmm", f"{tg * 1e3:.1f}", f"{ig * 1e3:.1f}"],
                ["gmm / softmax", f"{tg / ts:.3f}", f"{ig / is_:.3f}"],
            ],
            ["class head", "train step (ms)", "inference (ms)"],
        )
    )
    return results


if __name__ == "__main__":
    main()
