#!/usr/bin/env python
"""Training step and inference time of GMMSeg vs its softmax twin (same network, same input),
for the per-pixel heads. Prints a Markdown table with the ratios.

    python benchmarks/bench_heads.py [--size 256 512] [--batch 2] [--decoders FPNDecoder DeepLabV3PlusDecoder]

A training step is forward + backward + optimizer step + the EM hook's work (flush every step,
M-step every MODEL.GMM.UPDATE_INTERVAL steps); inference is the eval forward of the whole batch.
The two models alternate step by step (model_timing.time_models); medians are reported.
"""

import argparse

from common import machine, table, verdict
from model_timing import head_cfg, random_batch, time_models

TRAIN_TARGET, INFER_TARGET = 1.15, 1.05  # GMM / softmax


def time_decoder(decoder, batch, num_classes, depth, warmup=2, iters=5, opts=()):
    """{"softmax": (train s, inference s), "gmm": (...)} medians, the two models alternating."""
    cfgs = {p: head_cfg(decoder, p, num_classes, depth, opts) for p in ("softmax", "gmm")}
    return time_models(cfgs, batch, warmup, iters)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, nargs=2, default=[256, 512])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--depth", type=int, default=18)
    ap.add_argument("--decoders", nargs="+", default=["FPNDecoder", "DeepLabV3PlusDecoder"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    h, w = args.size
    print(
        f"# Heads: R-{args.depth}, batch {args.batch} of {h}x{w}, K={args.classes}; {machine()}\n"
    )
    batch = random_batch(args.batch, h, w, args.classes)
    rows = []
    for dec in args.decoders:
        res = time_decoder(dec, batch, args.classes, args.depth, iters=args.repeats)
        (ts, is_), (tg, ig) = res["softmax"], res["gmm"]
        rows.append(
            [
                dec,
                f"{ts * 1e3:.0f}",
                f"{tg * 1e3:.0f}",
                f"{tg / ts:.3f}x",
                verdict(tg / ts, TRAIN_TARGET),
                f"{is_ * 1e3:.1f}",
                f"{ig * 1e3:.1f}",
                f"{ig / is_:.3f}x",
                verdict(ig / is_, INFER_TARGET),
            ]
        )
    print(
        table(
            rows,
            [
                "decoder",
                "train ms softmax",
                "train ms gmm",
                "train ratio",
                "target",
                "infer ms softmax",
                "infer ms gmm",
                "infer ratio",
                "target",
            ],
        )
    )


if __name__ == "__main__":
    main()
