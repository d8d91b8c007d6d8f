#!/usr/bin/env python
"""FLOPs of the GMM head vs the softmax head (fvcore FlopCountAnalysis, eval forward).

    python benchmarks/bench_flops.py [--size 512 1024] [--classes 19] [--decoder FPNDecoder]

Counts backbone + head on one normalised image (fvcore counts one multiply-add as one flop) and
splits the total by module: the predictor (GMM: projection, LayerNorm, log-likelihood GEMMs,
max over components, class LayerNorm; softmax: the linear layer), the decoder, the whole head
(+ upsampling and, for the GMM, the anomaly map). Ops fvcore has no formula for are listed.

fvcore has no handle for the in-place aten::addmm_ (the second GEMM of the GMM log-likelihood):
its default count leaves that GEMM out. The "addmm_ counted" figures add it with fvcore's own
addmm formula (N x D x G).
"""

import argparse
import logging
import warnings

import torch
from common import machine, table
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import addmm_flop_jit
from model_timing import build_head_model
from torch import nn


class _BackboneAndHead(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.backbone, self.head = model.backbone, model.sem_seg_head

    def forward(self, images):
        results, _ = self.head(self.backbone(images))
        return tuple(results.values())


PARTS = (
    ("predictor", "head.predictor", "classifier (predictor) alone"),
    ("decoder", "head.decoder", "decoder"),
    ("head", "head", "head: decoder + predictor + upsampling"),
    ("model", "", "backbone + head"),
)


def count(predictor, size=(512, 1024), num_classes=19, decoder="FPNDecoder", depth=18):
    """({part: (flops fvcore default, flops with addmm_ counted)}, Counter of uncounted op names)."""
    # no bank: the eval forward does not read it, and a 32000-entry one takes seconds to fill
    model = _BackboneAndHead(
        build_head_model(decoder, predictor, num_classes, depth, ["MODEL.GMM.MEMORY_SIZE", "0"])
    ).eval()
    fca = (
        FlopCountAnalysis(model, torch.randn(1, 3, *size))
        .set_op_handle("aten::addmm_", addmm_flop_jit)
        .unsupported_ops_warnings(False)
        .uncalled_modules_warnings(False)
    )
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings
        ops = fca.by_module_and_operator()
    flops = {
        part: (sum(ops[mod].values()) - ops[mod].get("addmm_", 0), sum(ops[mod].values()))
        for part, mod, _ in PARTS
    }
    return flops, fca.unsupported_ops()


def compare(size=(512, 1024), num_classes=19, decoder="FPNDecoder", depth=18):
    """Rows [part, softmax GFLOPs, GMM GFLOPs, ratio, GMM GFLOPs with addmm_, ratio] and
    {predictor name: its uncounted ops, as text}."""
    res = {p: count(p, size, num_classes, decoder, depth) for p in ("softmax", "gmm")}
    rows = []
    for part, _, what in PARTS:
        s, (g, g_all) = res["softmax"][0][part][1], res["gmm"][0][part]
        rows.append(
            [
                what,
                f"{s / 1e9:.3f}",
                f"{g / 1e9:.3f}",
                f"{g / s:.3f}x",
                f"{g_all / 1e9:.3f}",
                f"{g_all / s:.3f}x",
            ]
        )
    return rows, {p: uncounted_ops(*r) for p, r in res.items()}


def uncounted_ops(flops, unsupported):
    """'aten::op (calls), ...': the ops fvcore did not count for one model."""
    names = [f"{op} ({n})" for op, n in sorted(unsupported.items())]
    inplace = flops["model"][1] - flops["model"][0]
    if inplace:
        names.append(
            f"aten::addmm_ (no fvcore handle: left out of the default count; {inplace / 1e9:.3f} GFLOPs, "
            "included in the 'addmm_ counted' columns)"
        )
    return ", ".join(names) or "none"


HEADERS = [
    "part",
    "softmax GFLOPs",
    "GMM GFLOPs (fvcore default)",
    "GMM / softmax",
    "GMM GFLOPs (addmm_ counted)",
    "GMM / softmax",
]


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, nargs=2, default=[512, 1024])
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--decoder", default="FPNDecoder")
    ap.add_argument("--depth", type=int, default=18)
    args = ap.parse_args()
    print(
        f"# FLOPs, {args.decoder} R-{args.depth}, 1 image {args.size[0]}x{args.size[1]}, K={args.classes}; "
        f"{machine()}\n"
    )
    rows, uncounted = compare(tuple(args.size), args.classes, args.decoder, args.depth)
    print(table(rows, HEADERS))
    for p, ops in uncounted.items():
        print(f"\n{p}: uncounted ops (calls): {ops}")


if __name__ == "__main__":
    main()
