#!/usr/bin/env python
"""Training step and inference time of GMMSeg vs its softmax twin (same network, same input),
for the per-pixel heads. Prints a Markdown table with the ratios.

    python benchmarks/bench_heads.py [--size 256 512] [--batch 2] [--decoders FPNDecoder DeepLabV3PlusDecoder]
"""
import argparse

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from common import machine, table, timeit
from gmmseg import add_gmmseg_config


def build(decoder, predictor, num_classes, depth):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file("configs/Base-PerPixel.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.NORM = "BN"
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    cfg.MODEL.SEM_SEG_HEAD.DECODER = decoder
    cfg.MODEL.PREDICTOR.NAME = predictor
    if decoder == "DeepLabV3PlusDecoder":
        cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res5"]
        cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res5"]
        cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 256
        cfg.MODEL.SEM_SEG_HEAD.NORM = "BN"
    torch.manual_seed(0)
    return build_model(cfg)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, nargs=2, default=[256, 512])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--depth", type=int, default=18)
    ap.add_argument("--decoders", nargs="+", default=["FPNDecoder", "DeepLabV3PlusDecoder"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    h, w = args.size
    print(f"# Heads: R-{args.depth}, batch {args.batch} of {h}x{w}, K={args.classes}; {machine()}\n")
    g = torch.Generator().manual_seed(0)
    batch = [{"image": torch.randint(0, 255, (3, h, w), generator=g).float(),
              "sem_seg": torch.randint(0, args.classes, (h, w), generator=g)} for _ in range(args.batch)]
    rows = []
    for dec in args.decoders:
        res = {}
        for pred in ["softmax", "gmm"]:
            model = build(dec, pred, args.classes, args.depth)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            ems = [m for m in model.modules() if getattr(m, "supports_em", False)]

            def step():
                model.train()
                loss = sum(model(batch).values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                for m in ems:
                    m.em_update()  # flush + M-step every step: an upper bound (the default is every 5)

            def infer():
                model.eval()
                with torch.no_grad():
                    model(batch[:1])
            res[pred] = (timeit(step, args.repeats), timeit(infer, args.repeats))
        (ts, is_), (tg, ig) = res["softmax"], res["gmm"]
        rows.append([dec, f"{ts:.0f}", f"{tg:.0f}", f"{tg / ts:.3f}x (target <= 1.15)",
                     f"{is_:.1f}", f"{ig:.1f}", f"{ig / is_:.3f}x (target <= 1.05)"])
    print(table(rows, ["decoder", "train ms softmax", "train ms gmm", "train ratio",
                       "infer ms softmax", "infer ms gmm", "infer ratio"]))


if __name__ == "__main__":
    main()
