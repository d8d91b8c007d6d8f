#!/usr/bin/env python
"""Seconds per training iteration of a config, before and after the step's speed-ups, in one run.

    export DETECTRON2_DATASETS=/path/to/datasets        # holds camvid/
    python benchmarks/bench_train_step.py --threads 2                  # one process, 2 threads
    python benchmarks/bench_train_step.py --threads 1 --side-by-side   # two such processes at once

A real training iteration of detectron2's loop (data loading in the process, forward, backward,
SGD step, the hooks: EM flush every iteration, M-step every 5, the LR scheduler), on the config's
own data (the pretrained CamVid open-set recipe in GMMSeg's release mode by default). Variants,
built in the same process and run in alternating rounds so that they share the machine's state:

  before          SegFormer decoder as written in the paper (concat, then the fuse conv), NCHW
  decoder         the decoder's composed per-stage convs (SegFormerMLPDecoder.forward), NCHW
  channels_last   the decoder's order and MODEL.CHANNELS_LAST True (what the CamVid configs use)

Prints the median s/iteration of each and the ratio to `before`. With --side-by-side the same
script runs twice concurrently (each with --threads), as two studies share the 2 cores.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from common import machine, table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RELEASE = ["MODEL.GMM.MEMORY_SIZE", "32000", "DATALOADER.SAMPLER_TRAIN", "ClassBalancedSampler"]
VARIANTS = {
    "before": dict(channels_last=False, concat_decoder=True),
    "decoder": dict(channels_last=False, concat_decoder=False),
    "channels_last": dict(channels_last=True, concat_decoder=False),
}


def build_stepper(config, opts, variant, out_dir):
    """One training iteration of `variant` per call (gmmseg.engine.stepping)."""
    from gmmseg import load_config
    from gmmseg.engine.stepping import training_stepper
    from gmmseg.modeling.sem_seg import SegFormerMLPDecoder

    v = VARIANTS[variant]
    cfg = load_config(
        config,
        list(opts)
        + [
            "OUTPUT_DIR",
            out_dir,
            "DATASETS.TEST",
            "()",
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.CHECKPOINT_PERIOD",
            "1000000",
            "MODEL.CHANNELS_LAST",
            str(v["channels_last"]),
        ],
    )
    cfg.freeze()
    step = training_stepper(cfg)
    decoder = step.trainer.model.sem_seg_head.decoder
    if v["concat_decoder"]:
        if not isinstance(decoder, SegFormerMLPDecoder):
            raise ValueError(
                f"{config}: the 'before' variant needs a SegFormerMLPDecoder, got {type(decoder).__name__}"
            )
        decoder.forward = decoder.forward_concat
    return step


def timed(step):
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def measure(config, opts, rounds, per_round, warmup):
    """{variant: [seconds per iteration]}: `rounds` rounds of `per_round` iterations of each
    variant in turn, after `warmup` iterations of each."""
    times = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        steppers = {v: build_stepper(config, opts, v, os.path.join(tmp, v)) for v in VARIANTS}
        for step in steppers.values():
            for _ in range(warmup):
                step()
        for _ in range(rounds):
            for v, step in steppers.items():
                times[v] += [timed(step) for _ in range(per_round)]
    return times


def summary(times):
    med = {v: statistics.median(t) for v, t in times.items()}
    return {
        v: {"median_s": med[v], "ratio_to_before": med[v] / med["before"], "n": len(times[v])}
        for v in med
    }


HEADERS = [
    "variant",
    "2 threads alone: s/it",
    "ratio",
    "1 thread, 2 runs side by side: s/it (each)",
    "ratio",
]


def rows_for(alone, pair):
    """Table rows from the JSON summaries of a --threads 2 run and a --threads 1 --side-by-side run."""
    rows = []
    for v in VARIANTS:
        a, (p1, p2) = alone[v], pair["side_by_side"]
        rows.append(
            [
                v,
                f"{a['median_s']:.3f}",
                f"{a['ratio_to_before']:.2f}x",
                f"{p1[v]['median_s']:.3f} / {p2[v]['median_s']:.3f}",
                f"{p1[v]['ratio_to_before']:.2f}x / {p2[v]['ratio_to_before']:.2f}x",
            ]
        )
    return rows


def run_json(*args):
    """This script in a child process with `args`; its JSON summary."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.json")
        subprocess.run(
            [sys.executable, os.path.abspath(__file__), *map(str, args), "--json", path],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return json.load(open(path))


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--config-file",
        default=os.path.join(ROOT, "configs/camvid/segformer_lite0_openset_gmm.yaml"),
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument(
        "--per-round", type=int, default=10, help="iterations of a variant per round (2 M-steps)"
    )
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument(
        "--side-by-side", action="store_true", help="run two copies of this measurement at once"
    )
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides (default: the release mode)"
    )
    args = ap.parse_args()
    opts = args.opts or RELEASE
    if args.side_by_side:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--config-file",
                args.config_file,
                "--threads",
                str(args.threads),
                "--rounds",
                str(args.rounds),
                "--per-round",
                str(args.per_round),
                "--warmup",
                str(args.warmup),
            ]
            procs = [
                subprocess.Popen(
                    cmd + ["--json", os.path.join(tmp, f"{i}.json"), *opts],
                    stdout=subprocess.DEVNULL,
                )
                for i in range(2)
            ]
            if any(p.wait() for p in procs):
                raise SystemExit(
                    "a side-by-side copy failed (run it without --side-by-side to see why)"
                )
            results = [json.load(open(os.path.join(tmp, f"{i}.json"))) for i in range(2)]
        rows = [
            [
                v,
                f"{results[0][v]['median_s']:.3f}",
                f"{results[1][v]['median_s']:.3f}",
                f"{results[0][v]['ratio_to_before']:.2f}x / {results[1][v]['ratio_to_before']:.2f}x",
            ]
            for v in VARIANTS
        ]
        headers = ["variant", "s/it, copy 1", "s/it, copy 2", "ratio to before"]
        result = {"side_by_side": results}
    else:
        torch.set_num_threads(args.threads)
        result = summary(measure(args.config_file, opts, args.rounds, args.per_round, args.warmup))
        rows = [
            [v, f"{r['median_s']:.3f}", f"{r['ratio_to_before']:.2f}x"] for v, r in result.items()
        ]
        headers = ["variant", "s/it (median)", "ratio to before"]
    if args.json:
        json.dump(result, open(args.json, "w"), indent=1)
    print(
        f"{machine()}; {os.path.relpath(args.config_file, ROOT)} {' '.join(opts)}; "
        f"{args.threads} thread(s){' x 2 processes' if args.side_by_side else ''}"
    )
    print(table(rows, headers))


if __name__ == "__main__":
    main()
