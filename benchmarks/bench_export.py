#!/usr/bin/env python
"""Inference of one image: eager PyTorch vs the exported TorchScript file vs ONNX Runtime, for the
GMM model (with its anomaly map) and its softmax twin. Prints a Markdown table.

    python benchmarks/bench_export.py [--size 360 480] [--iters 10] [--threads 2]

The model is the FPN head of section 2 (R-18, K = 19, random weights: the time does not depend on
them); the exported files are written by gmmseg.deploy (tools/deploy/export_model.py) to a
temporary folder. The six runners (2 models x 3 runtimes) alternate call by call; medians.
ONNX Runtime gets as many intra-op threads as torch.
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from detectron2.modeling import build_model

from model_timing import head_cfg
from common import machine, table
from gmmseg.deploy import ExportedSegmenter, export_metadata, export_model, prepare_for_export, state_bytes

CLASSES, DEPTH = 19, 18
RUNTIMES = ("eager", "torchscript", "onnxruntime")


def runners(predictor, image, folder, threads):
    """{runtime: fn() -> {output: numpy}} for one model; and the exported files' sizes."""
    cfg = head_cfg("FPNDecoder", predictor, CLASSES, DEPTH)
    torch.manual_seed(0)
    eager = build_model(cfg).eval()
    exported = build_model(cfg)
    exported.load_state_dict(eager.state_dict())
    prepare_for_export(exported)
    tensor = torch.from_numpy(image)
    files = {fmt: export_model(exported, tensor, fmt, os.path.join(folder, f"{predictor}.{ext}"),
                               export_metadata(cfg, CLASSES))
             for fmt, ext in (("torchscript", "ts"), ("onnx", "onnx"))}
    ts = ExportedSegmenter(files["torchscript"], threads=threads)
    ort = ExportedSegmenter(files["onnx"], threads=threads)

    def run_eager():
        with torch.no_grad():
            return {k: v.numpy() for k, v in eager([{"image": tensor}])[0].items()}

    fns = {"eager": run_eager, "torchscript": lambda: ts.run(image), "onnxruntime": lambda: ort.run(image)}
    return fns, {"eager state": state_bytes(eager), **{fmt: os.path.getsize(p) for fmt, p in files.items()}}


def run(size=(360, 480), warmup=2, iters=10, threads=None):
    """{predictor: {"ms": {runtime: median ms}, "diff": {runtime: {output: max |diff| vs eager}}, "mib": {...}}}."""
    threads = threads or torch.get_num_threads()
    image = np.random.default_rng(0).uniform(0, 255, (3, *size)).astype(np.float32)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        fns, sizes = {}, {}
        for predictor in ("softmax", "gmm"):
            fns[predictor], sizes[predictor] = runners(predictor, image, folder, threads)
        times = {(p, r): [] for p in fns for r in RUNTIMES}
        outputs = {}
        for i in range(warmup + iters):
            for (p, r), samples in times.items():
                t0 = time.perf_counter()
                outputs[p, r] = fns[p][r]()
                if i >= warmup:
                    samples.append((time.perf_counter() - t0) * 1e3)
        for p in fns:
            ref = outputs[p, "eager"]
            results[p] = {
                "ms": {r: statistics.median(times[p, r]) for r in RUNTIMES},
                "diff": {r: {k: float(np.abs(outputs[p, r][k] - ref[k]).max()) for k in ref} for r in RUNTIMES[1:]},
                "mib": {fmt: b / 2**20 for fmt, b in sizes[p].items()},
            }
    return results


def rows_for(results):
    rows = []
    for p, res in results.items():
        ms, diff = res["ms"], res["diff"]
        d = diff["onnxruntime"]
        rows.append([p, f"{ms['eager']:.1f}", f"{ms['torchscript']:.1f}", f"{ms['onnxruntime']:.1f}",
                     f"{ms['torchscript'] / ms['eager']:.2f}x", f"{ms['onnxruntime'] / ms['eager']:.2f}x",
                     " / ".join(f"{d[k]:.1e}" for k in sorted(d)),
                     f"{res['mib']['eager state']:.1f}", f"{res['mib']['torchscript']:.1f} / {res['mib']['onnx']:.1f}"])
    gmm, soft = results["gmm"]["ms"], results["softmax"]["ms"]
    rows.append(["gmm / softmax", "", "", "", "", "", "", "", ""])
    rows[-1][1:4] = [f"{gmm[r] / soft[r]:.3f}x" for r in RUNTIMES]
    return rows


HEADERS = ["model", "eager ms", "TorchScript ms", "ONNX Runtime ms", "TorchScript / eager", "ONNX Runtime / eager",
           "max abs diff ONNX Runtime vs eager (anomaly / scores)", "eager model state MiB (with the bank)",
           "file MiB (.ts / .onnx)"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=2, default=[360, 480])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# Exported inference: FPN R-{DEPTH}, K={CLASSES}, one {args.size[0]}x{args.size[1]} image; {machine()}; "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print(table(rows_for(run(tuple(args.size), iters=args.iters)), HEADERS))


if __name__ == "__main__":
    main()
