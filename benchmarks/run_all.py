#!/usr/bin/env python
"""The whole performance suite in one command: prints one table per section and writes
docs/BENCHMARKS.md. Every figure is a ratio of two measurements taken in the same run.

    python benchmarks/run_all.py --threads 2                # full run (<= 15 min on 2 cores)
    python benchmarks/run_all.py --quick --threads 1        # small sizes, < 2 min, writes to /tmp

Sections: 1. GMM core (bench_gmm_core), 2. heads GMM vs softmax (bench_heads, bench_mask_former),
3. EM communication (bench_em_communication), 4. memory bank bytes, 5. FLOPs (bench_flops),
6. exported inference: eager vs TorchScript vs ONNX Runtime (bench_export),
7. EM memory and communication per rank at W = 1, 2, 4 GLOO processes (bench_em_scaling),
8. a training iteration of the pretrained CamVid recipe before / after its speed-ups
   (bench_train_step; needs CamVid under $DETECTRON2_DATASETS, else the section says it was skipped).

    python benchmarks/run_all.py --sections 7              # only section 7, replaced in the existing file
    python benchmarks/run_all.py --sections 6 --threads 1 --clock cpu   # section 6 by CPU time (a busy machine)
"""

import argparse
import datetime
import os
import shlex
import sys
import time

import bench_em_communication
import bench_em_scaling
import bench_export
import bench_flops
import bench_gmm_core
import bench_heads
import bench_mask_former
import bench_train_step
import model_timing
import torch
from common import cpu_model, table, verdict

from gmmseg.gmm import FeatureMemory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FULL = dict(
    core=dict(n=32768, classes=(19, 150), repeats=5, capacity=32000),
    heads=dict(batch=2, size=(256, 512), warmup=2, iters=10, opts=()),
    m2f=dict(batch=8, size=(96, 128), warmup=2, iters=10),
    comm=dict(images=2, height=512, width=1024, iters=3),
    flops=dict(size=(512, 1024)),
    export=dict(size=(360, 480), warmup=2, iters=10, head_iters=100),
    scaling=dict(worlds=(1, 2, 4), iters=5),
    step=dict(rounds=4, per_round=10, warmup=5),
)
QUICK = dict(
    core=dict(n=4096, classes=(19, 150), repeats=3, capacity=1000),
    heads=dict(batch=2, size=(64, 128), warmup=1, iters=2, opts=("MODEL.GMM.MEMORY_SIZE", "1000")),
    m2f=dict(batch=2, size=(96, 128), warmup=1, iters=2),
    comm=dict(images=1, height=128, width=256, iters=1),
    flops=dict(size=(128, 256)),
    export=dict(size=(96, 128), warmup=1, iters=2, head_iters=5),
    scaling=dict(worlds=(1, 2), iters=1),
    step=dict(rounds=1, per_round=2, warmup=1),
)
M, D, CLASSES, DEPTH = 5, 64, 19, 18
over_target = []  # every measured ratio above its target, for the summary at the top


def checked(what, ratio, target):
    if ratio > target:
        over_target.append(f"{what}: {ratio:.3f}x > {target:g}x")
    return verdict(ratio, target)


def core(p):
    c = p["core"]
    rows = []
    for k in c["classes"]:
        r = bench_gmm_core.measure(k, c["n"], M, D, c["repeats"], c["capacity"])
        rows += bench_gmm_core.rows_for(k, r, M)
        checked(
            f"log-likelihood C={k} vs 2 bare GEMMs",
            r["loglik"] / r["bare"],
            bench_gmm_core.LOGLIK_TARGET,
        )
    return (
        f"N = {c['n']} embeddings, M = {M}, D = {D}, bank capacity {c['capacity']} per (class, component). "
        "Median ms. The two-GEMM log-likelihood is compared with two bare `(N, D) @ (D, C*M)` matmuls "
        "and with the release's `(N, C*M, D)` broadcast. Memory push: 20 rows into each of the C*M "
        "groups of a full bank (every push overwrites, the running statistics subtract what "
        "leaves). The M-step updates every component from the running statistics; the "
        "reference recomputes them by reading the whole bank.\n\n"
        + table(rows, ["what", "ms", "reference", "ratio", "target / note"])
    )


def heads(p):
    h, m2f = p["heads"], p["m2f"]
    batch = model_timing.random_batch(h["batch"], *h["size"], CLASSES)
    results = {}
    for dec in ("FPNDecoder", "DeepLabV3PlusDecoder"):
        results[f"{dec} (R-{DEPTH}, {h['batch']} x {h['size'][0]}x{h['size'][1]}, K={CLASSES})"] = (
            bench_heads.time_decoder(dec, batch, CLASSES, DEPTH, h["warmup"], h["iters"], h["opts"])
        )
    results[f"Mask2Former demo (R-18, {m2f['batch']} x {m2f['size'][0]}x{m2f['size'][1]}, K=6)"] = (
        bench_mask_former.run(
            batch=m2f["batch"], size=m2f["size"], warmup=m2f["warmup"], iters=m2f["iters"]
        )
    )
    rows = []
    for name, res in results.items():
        (ts, is_), (tg, ig) = res["softmax"], res["gmm"]
        rows.append(
            [
                name,
                f"{ts * 1e3:.0f}",
                f"{tg * 1e3:.0f}",
                f"{tg / ts:.3f}x",
                checked(f"{name} train step", tg / ts, bench_heads.TRAIN_TARGET),
                f"{is_ * 1e3:.1f}",
                f"{ig * 1e3:.1f}",
                f"{ig / is_:.3f}x",
                checked(f"{name} inference", ig / is_, bench_heads.INFER_TARGET),
            ]
        )
    return (
        f"Same network, same synthetic batch; the GMM and softmax models alternate step by step, "
        f"median of {h['iters']} (per-pixel) / {m2f['iters']} (Mask2Former) after warm-up. A training "
        "step is forward + backward + optimizer step + the EM hook's work (flush every step, M-step "
        "every MODEL.GMM.UPDATE_INTERVAL steps); inference is the eval forward (GMM: + anomaly map).\n\n"
        + table(
            rows,
            [
                "model",
                "train ms softmax",
                "train ms GMM",
                "train GMM / softmax",
                "target",
                "infer ms softmax",
                "infer ms GMM",
                "infer GMM / softmax",
                "target",
            ],
        )
    )


def communication(p):
    c = p["comm"]
    res = bench_em_communication.run(
        images=c["images"], height=c["height"], width=c["width"], iters=c["iters"]
    )
    n = c["images"] * (c["height"] // 4) * (c["width"] // 4)
    rows = [
        [
            what,
            f"{res[k]['theirs']:,}",
            f"{res[k]['ours']:,}",
            f"{res[k]['theirs'] / res[k]['ours']:.0f}x",
            res[k]["rows"],
            f"{res[k]['t_theirs']:.1f} / {res[k]['t_ours']:.2f}",
        ]
        for k, what in bench_em_communication.KINDS
    ]
    return (
        f"2 GLOO ranks on localhost, {c['images']} image(s) of {c['height']}x{c['width']} per rank, stride 4 "
        f"(N = {n} pixels per rank), D = {D}, {CLASSES} classes x {M} components, PUSHES_PER_STEP = 20; "
        "bytes each rank hands to `all_gather` per iteration, the larger rank, max over "
        f"{c['iters']} iterations.\n\n"
        + table(
            rows,
            [
                "labels",
                "release B (embeddings + labels + assignments)",
                "this project B (rows set aside)",
                "release / this project",
                "rows set aside",
                "gather ms release / ours",
            ],
        )
        + f"\n\nFormulas: release N x (D + 1 + M) x 4 = {res['release_formula']:,} B; this project at most "
        f"8 + K x M x 20 x (D + 1) x 4 = {res['bound_formula']:,} B, independent of the image size."
    )


def buffer_bytes(groups, capacity, dim, dtype, device="meta"):
    """{"bank": bytes, "rest": bytes} of a FeatureMemory's buffers (a meta one allocates nothing)."""
    with torch.device(device):
        mem = FeatureMemory(groups, capacity, dim, init="empty", dtype=dtype)
    sizes = {name: b.numel() * b.element_size() for name, b in mem.named_buffers()}
    return {"bank": sizes.pop("bank"), "rest": sum(sizes.values())}


def memory_bank(p):
    # the meta instance's sizes are the real ones: check on a small real bank, and against G x L x D
    for dtype in (torch.float32, torch.bfloat16):
        small = buffer_bytes(10, 32, D, dtype, "cpu")
        assert small == buffer_bytes(10, 32, D, dtype), "meta and real FeatureMemory sizes differ"
        assert small["bank"] == 10 * 32 * D * dtype.itemsize
    rows = []
    for name, k in (("ADE20K", 150), ("Cityscapes", CLASSES)):
        fp32 = None
        for dtype in (torch.float32, torch.bfloat16):
            b = buffer_bytes(k * M, 32000, D, dtype)
            total = b["bank"] + b["rest"]
            fp32 = fp32 or total
            rows.append(
                [
                    name,
                    f"{k} x {M} x 32000 x {D}",
                    str(dtype).replace("torch.", ""),
                    f"{b['bank'] / 2**20:,.0f}",
                    f"{b['rest'] / 2**10:,.0f}",
                    f"{total / 2**30:.2f}",
                    f"{total / fp32:.3f}x",
                ]
            )
    return (
        "The whole bank, as one process holds it, or every rank with MODEL.GMM.MEMORY_LAYOUT "
        "replicated (sharded over W ranks, each holds 1/W of it: section 7). Sizes of FeatureMemory's "
        "buffers, read from a meta-device instance of the full size (checked equal to a small real "
        "instance): the bank, plus the exact (int64 fixed-point) statistics (count, sum, sum of "
        "squares) and int64 pointers per group.\n\n"
        + table(
            rows,
            [
                "dataset",
                "K x M x L x D",
                "bank dtype",
                "bank MiB",
                "statistics + pointers KiB",
                "total GiB per rank",
                "vs float32",
            ],
        )
    )


def flops(p):
    size = p["flops"]["size"]
    rows, uncounted = bench_flops.compare(size, CLASSES, "FPNDecoder", DEPTH)
    return (
        f"fvcore FlopCountAnalysis of the eval forward, FPN head on R-{DEPTH}, one {size[0]}x{size[1]} image, "
        f"K = {CLASSES} (fvcore counts one multiply-add as one flop; elementwise ops are not counted).\n\n"
        + table(rows, bench_flops.HEADERS)
        + "\n\nOps fvcore did not count (calls):\n\n"
        + "\n".join(f"- {name}: {ops}" for name, ops in uncounted.items())
    )


def exported(p):
    e = p["export"]
    res = bench_export.run(
        e["size"], e["warmup"], e["iters"], clock=p["clock"], head_iters=e["head_iters"]
    )
    clock = (
        "CPU time of the process (`--clock cpu`: on a busy machine the wall time mostly measures the wait for a core)"
        if p["clock"] == "cpu"
        else "wall time"
    )
    ratios = bench_export.gmm_ratios(res)
    verdicts = [
        f"{name} {ratios[r]:.3f}x: "
        + checked(f"exported GMM / softmax, {name}", ratios[r], bench_export.TARGET)
        for r, name in (("torchscript", "TorchScript"), ("onnxruntime", "ONNX Runtime"))
    ]
    return (
        f"One {e['size'][0]}x{e['size'][1]} image, FPN head on R-{DEPTH}, K = {CLASSES}: the eager model "
        '(`model([{"image": x}])`, GMM: + anomaly map) vs the file written by tools/deploy/export_model.py '
        "run by torch.jit (TorchScript) and by ONNX Runtime (CPU provider, as many intra-op threads as torch); "
        f"the six runners alternate call by call, median {clock} of {e['iters']} calls after warm-up. The "
        "files hold no memory bank (the eager GMM model's state includes it: MODEL.GMM.MEMORY_SIZE 32000). "
        "The head-alone rows time what differs between the two models: the same six runners with the "
        "backbone and decoder replaced by one cheap stand-in of the decoder's output shape (predictor, "
        f"upsampling, anomaly map, postprocess), {e['head_iters']} rounds, median of the paired differences "
        "GMM - twin; 1 + that / the whole twin's time is the ratio checked against the target (the whole "
        "models' ratio carries the noise of two full inferences).\n\n"
        + table(bench_export.rows_for(res), bench_export.HEADERS)
        + "\n\nExported GMM / softmax twin (head-alone difference): "
        + "; ".join(verdicts)
        + "."
    )


def scaling(p):
    worlds = p["scaling"]["worlds"]
    res = bench_em_scaling.measure(worlds, iters=p["scaling"]["iters"])
    return (
        "Per rank, measured in W GLOO processes on this machine (bench_em_scaling.py): the bank each "
        "rank allocates for the full-size setting (32,000 entries per (class, component), D = 64, "
        'float32; the release replicates it, this project shards it: MODEL.GMM.MEMORY_LAYOUT "auto"), '
        "and the bytes each rank hands to collectives per iteration while running the real forward + "
        "flush() + em_update() for 5 iterations (one M-step), every class in every rank's batch "
        "(the upper bound), ADE20K with 2 x 512x512 and Cityscapes with 2 x 512x1024 images per rank "
        "(stride 4). The release all-gathers every pixel's embedding, label and assignment.\n\n"
        + bench_em_scaling.tables(res, worlds)
    )


def train_step(p):
    from gmmseg.data.common import datasets_root

    root = datasets_root()
    if not os.path.isdir(os.path.join(root, "camvid", "train")):
        return f"Skipped: no CamVid in {os.path.join(root, 'camvid')} (set DETECTRON2_DATASETS; tools/prepare_camvid.py)."
    s = p["step"]
    common = ["--rounds", s["rounds"], "--per-round", s["per_round"], "--warmup", s["warmup"]]
    alone = bench_train_step.run_json("--threads", 2, *common)
    pair = bench_train_step.run_json("--threads", 1, "--side-by-side", *common)
    return (
        "A real training iteration (detectron2's loop: data loading in the process, forward, backward, SGD, "
        "the EM hook) of configs/camvid/segformer_lite0_openset_gmm.yaml in GMMSeg's release mode (memory "
        "32,000, class-balanced sampler) on CamVid. `before`: the SegFormer decoder as the paper writes it "
        "(concat, then the fuse conv at stride 4), NCHW; `decoder`: the same function as composed per-stage "
        "convs summed after upsampling (SegFormerMLPDecoder.forward); `channels_last`: that and "
        "MODEL.CHANNELS_LAST (what the config uses). The variants are built in one process and run in "
        f"alternating rounds ({s['rounds']} x {s['per_round']} iterations each after {s['warmup']}); "
        "median s/iteration; the side-by-side columns are two such processes at once, one thread each.\n\n"
        + table(bench_train_step.rows_for(alone, pair), bench_train_step.HEADERS)
    )


SECTIONS = [
    ("1. GMM core", core),
    ("2. Heads: GMM vs softmax twin", heads),
    ("3. EM communication per rank per iteration", communication),
    ("4. Memory bank bytes per rank", memory_bank),
    ("5. FLOPs: GMM head vs softmax head", flops),
    ("6. Exported inference: eager vs TorchScript vs ONNX Runtime", exported),
    ("7. EM memory and communication per rank vs number of ranks", scaling),
    ("8. Training step of the pretrained CamVid recipe", train_step),
]


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, few repeats (< 2 min): a check, not results",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument(
        "--clock",
        choices=sorted(bench_export.CLOCKS),
        default="wall",
        help="section 6 (exported inference): wall time, or the process's CPU time (with --threads 1 "
        "on a machine busy with other jobs)",
    )
    ap.add_argument(
        "--output",
        help="Markdown file (default docs/BENCHMARKS.md; with --quick /tmp/gmmseg_BENCHMARKS_quick.md)",
    )
    ap.add_argument(
        "--sections",
        type=int,
        nargs="+",
        help="run only these sections (numbers) and replace them in the existing output file",
    )
    args = ap.parse_args()
    output = args.output or (
        "/tmp/gmmseg_BENCHMARKS_quick.md"
        if args.quick
        else os.path.join(ROOT, "docs/BENCHMARKS.md")
    )
    torch.set_num_threads(args.threads)
    p = dict(QUICK if args.quick else FULL, clock=args.clock)
    command = " ".join(shlex.quote(a) for a in ["python"] + sys.argv)
    env = (
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} "
        if "OMP_NUM_THREADS" in os.environ
        else ""
    )
    header = [
        "# Performance benchmarks"
        + (" (QUICK RUN: small sizes, not results)" if args.quick else ""),
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.2f}",
        f"- torch {torch.__version__}, {torch.get_num_threads()} threads (torch.set_num_threads), "
        f"Python {sys.version.split()[0]}",
        f"- Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"- Command (from the repository root): `{env}{command}`",
    ]
    if args.sections:
        return update_sections(output, args.sections, p, f"{env}{command}")
    t_start = time.perf_counter()
    body = []
    for title, fn in SECTIONS:
        print(f"\n## {title}\n", flush=True)
        t0 = time.perf_counter()
        text = fn(p)
        text += f"\n\n_Section time: {time.perf_counter() - t0:.0f} s._"
        print(text, flush=True)
        body += [f"## {title}", "", text, ""]
    total = time.perf_counter() - t_start
    header.append(f"- Wall time of the whole suite: {total / 60:.1f} min")
    header.append(
        "- Every figure below is a ratio of two measurements taken in this run; targets: "
        "log-likelihood <= 2x two bare GEMMs, GMM train step <= 1.15x softmax, inference <= 1.05x"
    )
    summary = (
        "**Over target in this run:**\n\n" + "\n".join(f"- {o}" for o in over_target)
        if over_target
        else "All targets met in this run."
    )
    doc = "\n".join(header + ["", summary, ""] + body)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        f.write(doc.rstrip() + "\n")
    print(f"\n{summary}\n\nTotal {total:.0f} s; written to {output}")


def update_sections(output, numbers, p, command):
    """Run the chosen sections and replace (or append) them in `output`, each stamped with its date,
    machine load and command (the rest of the file keeps the figures of its own run)."""
    with open(output) as f:
        text = f.read()
    for title, fn in SECTIONS:
        if int(title.split(".")[0]) not in numbers:
            continue
        print(f"\n## {title}\n", flush=True)
        t0 = time.perf_counter()
        load = os.getloadavg()[0]
        body = fn(p) + (
            f"\n\n_Section run separately: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, "
            f"load average at start {load:.2f}, `{command}`, {time.perf_counter() - t0:.0f} s._"
        )
        print(body, flush=True)
        section = f"## {title}\n\n{body}\n"
        start = text.find(f"## {title}")
        if start < 0:  # a new section: before the first one of a higher number, else at the end
            later = [
                text.find(f"## {t}")
                for t, _ in SECTIONS
                if int(t.split(".")[0]) > int(title.split(".")[0])
            ]
            later = [i for i in later if i >= 0]
            text = (
                text[: min(later)] + section + "\n" + text[min(later) :]
                if later
                else text.rstrip() + "\n\n" + section
            )
        else:
            end = text.find("\n## ", start + 3)
            text = text[:start] + section + (text[end:] if end >= 0 else "")
    with open(output, "w") as f:
        f.write(text.rstrip() + "\n")
    print(f"\nsections {numbers} written to {output}")


if __name__ == "__main__":
    main()
