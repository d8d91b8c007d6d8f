#!/usr/bin/env python
"""Inference of one image: eager PyTorch vs the exported TorchScript file vs ONNX Runtime, for the
GMM model (with its anomaly map) and its softmax twin. Prints a Markdown table.

    python benchmarks/bench_export.py [--size 360 480] [--iters 10] [--threads 2] [--clock wall] [--head-iters 0]

The model is the FPN head of section 2 (R-18, K = 19, random weights: the time does not depend on
them); the exported files are written by gmmseg.deploy (tools/deploy/export_model.py) to a
temporary folder. The six runners (2 models x 3 runtimes) alternate call by call; medians.
ONNX Runtime gets as many intra-op threads as torch.

--clock cpu times each call by the CPU time of the process (time.process_time) instead of the
wall clock: on a machine busy with other jobs the wall time mostly measures the wait for a core,
the CPU time what the call computes. Use it with --threads 1 (idle worker threads that spin are
CPU time too).

--head-iters N also times what differs between the two models alone, N rounds: both models with
the backbone and the decoder replaced by the same cheap stand-in (a 4x4 average pool and a 1x1
conv to the decoder's output shape), so that the runners time the predictor, the upsampling, the
anomaly map and the postprocess. The median of the paired per-round differences GMM - twin
(a few ms, precise where the whole models' ratio is lost in the noise of a busy machine) gives
the ratio 1 + (GMM - twin) / twin, with the twin's median time from the whole-model rounds.
"""

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from common import machine, table
from detectron2.modeling import build_model
from model_timing import head_cfg
from torch import nn
from torch.nn import functional as F

from gmmseg.deploy import (
    ExportedSegmenter,
    export_metadata,
    export_model,
    prepare_for_export,
    state_bytes,
)

CLASSES, DEPTH = 19, 18
RUNTIMES = ("eager", "torchscript", "onnxruntime")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
TARGET = 1.03  # GMM / softmax twin, exported (TorchScript and ONNX Runtime)


class _StandInBackbone(nn.Module):
    """The decoder's output shape (B, C, H/s, W/s) from the image: an s x s average pool and a 1x1 conv."""

    def __init__(self, channels: int, stride: int, size_divisibility: int, padding_constraints):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 1)
        self.stride, self.size_divisibility, self.padding_constraints = (
            stride,
            size_divisibility,
            padding_constraints,
        )

    def forward(self, images):
        return {"stand_in": self.conv(F.avg_pool2d(images, self.stride))}


class _StandInDecoder(nn.Module):
    def forward(self, features):
        return features["stand_in"]


def _head_alone(model):
    """`model` with its backbone and decoder replaced by the stand-in (the same weights for every model)."""
    head = model.sem_seg_head
    torch.manual_seed(1)
    model.backbone = _StandInBackbone(
        head.decoder.out_channels,
        head.common_stride,
        model.backbone.size_divisibility,
        model.backbone.padding_constraints,
    )
    head.decoder = _StandInDecoder()
    return model


def _build(cfg, head_alone):
    torch.manual_seed(0)
    model = build_model(cfg)
    return _head_alone(model) if head_alone else model


def runners(predictor, image, folder, threads, head_alone=False):
    """{runtime: fn() -> {output: numpy}} for one model (head_alone: its backbone and decoder replaced by
    the stand-in); and the exported files' sizes."""
    cfg = head_cfg("FPNDecoder", predictor, CLASSES, DEPTH)
    eager = _build(cfg, head_alone).eval()
    exported = _build(cfg, head_alone)
    exported.load_state_dict(eager.state_dict())
    prepare_for_export(exported)
    tensor = torch.from_numpy(image)
    files = {
        fmt: export_model(
            exported,
            tensor,
            fmt,
            os.path.join(folder, f"{predictor}{'_head' * head_alone}.{ext}"),
            export_metadata(cfg, CLASSES),
        )
        for fmt, ext in (("torchscript", "ts"), ("onnx", "onnx"))
    }
    ts = ExportedSegmenter(files["torchscript"], threads=threads)
    ort = ExportedSegmenter(files["onnx"], threads=threads)

    def run_eager():
        with torch.no_grad():
            return {k: v.numpy() for k, v in eager([{"image": tensor}])[0].items()}

    fns = {
        "eager": run_eager,
        "torchscript": lambda: ts.run(image),
        "onnxruntime": lambda: ort.run(image),
    }
    return fns, {
        "eager state": state_bytes(eager),
        **{fmt: os.path.getsize(p) for fmt, p in files.items()},
    }


def _alternate(fns, rounds, warmup, now):
    """{key: [ms per round]}: the runners fns {key: fn} called in turn, `rounds` times after `warmup`;
    and the last outputs."""
    times, outputs = {k: [] for k in fns}, {}
    for i in range(warmup + rounds):
        for k, fn in fns.items():
            t0 = now()
            outputs[k] = fn()
            if i >= warmup:
                times[k].append((now() - t0) * 1e3)
    return times, outputs


def head_delta(image, folder, threads, rounds, warmup, now):
    """{runtime: median over rounds of (GMM - twin) ms}, both with the stand-in backbone and decoder."""
    fns = {}
    for predictor in ("softmax", "gmm"):
        model_fns, _ = runners(predictor, image, folder, threads, head_alone=True)
        fns.update({(predictor, r): fn for r, fn in model_fns.items()})
    times, _ = _alternate(fns, rounds, warmup, now)
    return {
        r: statistics.median(g - s for s, g in zip(times["softmax", r], times["gmm", r]))
        for r in RUNTIMES
    }


def run(size=(360, 480), warmup=2, iters=10, threads=None, clock="wall", head_iters=0):
    """{predictor: {"ms": {runtime: median ms}, "diff": {runtime: {output: max |diff| vs eager}}, "mib": {...}}},
    and with head_iters > 0 "head delta": {runtime: median ms of GMM - twin, head alone} (module docstring).
    clock: "wall" or "cpu" (the process's CPU time, module docstring)."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    now = CLOCKS[clock]
    threads = threads or torch.get_num_threads()
    image = np.random.default_rng(0).uniform(0, 255, (3, *size)).astype(np.float32)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        fns, sizes = {}, {}
        for predictor in ("softmax", "gmm"):
            fns[predictor], sizes[predictor] = runners(predictor, image, folder, threads)
        times, outputs = _alternate(
            {(p, r): fns[p][r] for p in fns for r in RUNTIMES}, iters, warmup, now
        )
        for p in fns:
            ref = outputs[p, "eager"]
            results[p] = {
                "ms": {r: statistics.median(times[p, r]) for r in RUNTIMES},
                "diff": {
                    r: {k: float(np.abs(outputs[p, r][k] - ref[k]).max()) for k in ref}
                    for r in RUNTIMES[1:]
                },
                "mib": {fmt: b / 2**20 for fmt, b in sizes[p].items()},
            }
        if head_iters > 0:
            results["head delta"] = head_delta(image, folder, threads, head_iters, warmup, now)
    return results


def gmm_ratios(results):
    """{runtime: GMM / twin}: 1 + (GMM - twin, head alone) / twin where measured, else the whole models' ratio."""
    soft, gmm = results["softmax"]["ms"], results["gmm"]["ms"]
    if "head delta" in results:
        return {r: 1 + results["head delta"][r] / soft[r] for r in RUNTIMES}
    return {r: gmm[r] / soft[r] for r in RUNTIMES}


def rows_for(results):
    rows = []
    for p in ("softmax", "gmm"):
        res = results[p]
        ms, diff = res["ms"], res["diff"]
        d = diff["onnxruntime"]
        rows.append(
            [
                p,
                f"{ms['eager']:.1f}",
                f"{ms['torchscript']:.1f}",
                f"{ms['onnxruntime']:.1f}",
                f"{ms['torchscript'] / ms['eager']:.2f}x",
                f"{ms['onnxruntime'] / ms['eager']:.2f}x",
                " / ".join(f"{d[k]:.1e}" for k in sorted(d)),
                f"{res['mib']['eager state']:.1f}",
                f"{res['mib']['torchscript']:.1f} / {res['mib']['onnx']:.1f}",
            ]
        )
    gmm, soft = results["gmm"]["ms"], results["softmax"]["ms"]
    rows.append(["gmm / softmax", "", "", "", "", "", "", "", ""])
    rows[-1][1:4] = [f"{gmm[r] / soft[r]:.3f}x" for r in RUNTIMES]
    if "head delta" in results:
        delta, ratios = results["head delta"], gmm_ratios(results)
        rows.append(
            ["gmm - softmax, head alone (ms)"] + [f"{delta[r]:.2f}" for r in RUNTIMES] + [""] * 5
        )
        rows.append(
            ["1 + (gmm - softmax, head alone) / softmax"]
            + [f"{ratios[r]:.3f}x" for r in RUNTIMES]
            + [""] * 5
        )
    return rows


HEADERS = [
    "model",
    "eager ms",
    "TorchScript ms",
    "ONNX Runtime ms",
    "TorchScript / eager",
    "ONNX Runtime / eager",
    "max abs diff ONNX Runtime vs eager (anomaly / scores)",
    "eager model state MiB (with the bank)",
    "file MiB (.ts / .onnx)",
]


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, nargs=2, default=[360, 480])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch and ONNX Runtime threads (default: torch's)",
    )
    ap.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or the process's CPU time (with --threads 1 on a busy machine)",
    )
    ap.add_argument(
        "--head-iters",
        type=int,
        default=0,
        help="also time GMM - twin with the backbone and decoder replaced by a stand-in, this many rounds",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"# Exported inference: FPN R-{DEPTH}, K={CLASSES}, one {args.size[0]}x{args.size[1]} image; {machine()}; "
        f"load average {os.getloadavg()[0]:.2f}; {args.clock} clock\n"
    )
    results = run(tuple(args.size), iters=args.iters, clock=args.clock, head_iters=args.head_iters)
    print(table(rows_for(results), HEADERS))


if __name__ == "__main__":
    main()
