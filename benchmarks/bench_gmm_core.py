#!/usr/bin/env python
"""GMM core hot paths: log-likelihood (matmul form vs the release's broadcast vs bare GEMMs),
Sinkhorn E-step, memory push, M-step. Prints a Markdown table of times and ratios.

    python benchmarks/bench_gmm_core.py [--n 32768] [--classes 19 150]

The memory timings use a full bank (every slot filled, so every push overwrites: the steady
state); the M-step updates every component (each has received data) from the running
statistics, compared with recomputing those statistics by reading the whole bank.
"""

import argparse
import math

import torch
import torch.nn.functional as F
from common import machine, table, timeit, verdict

from gmmseg.gmm import FeatureMemory, GMMPredictor, gaussian_log_likelihood, sinkhorn_assign

LOGLIK_TARGET = 2.0  # log-likelihood time / two bare GEMMs of the same shapes


def broadcast_log_likelihood(x, means, stds, chunk=2048):
    """The release's form: (N, G, D) broadcast, in float32 (chunked so C=150 fits in RAM)."""
    d = x.shape[1]
    const = -0.5 * d * math.log(2 * math.pi) - stds.log().sum(-1)
    out = []
    for xs in x.split(chunk):
        z = (xs[:, None] - means[None]) / stds[None]
        out.append(const[None] - 0.5 * z.pow(2).sum(-1))
    return torch.cat(out)


def measure(k, n=32768, m=5, d=64, repeats=5, capacity=32000, pushes=20):
    """Median times (ms) of the core operations for k classes, and the bank's size in bytes."""
    torch.manual_seed(0)
    g = k * m
    r = {}
    x = F.normalize(torch.randn(n, d), dim=-1)
    means = F.normalize(torch.randn(g, d), dim=-1)
    stds = 0.1 + torch.rand(g, d)
    w1, w2 = torch.randn(d, g), torch.randn(d, g)
    r["loglik"] = timeit(lambda: gaussian_log_likelihood(x, means, stds), repeats)
    r["bare"] = timeit(lambda: (x @ w1, x @ w2), repeats)
    r["naive"] = timeit(
        lambda: broadcast_log_likelihood(x, means, stds), max(1, repeats // 2), warmup=1
    )

    cls = torch.randint(0, k, (n,))
    own = torch.randn(n, m) * 10 - 100
    r["sinkhorn"] = timeit(lambda: sinkhorn_assign(own, cls, k, num_iters=3), repeats)

    mem = FeatureMemory(g, capacity, d, init="empty")
    mem.bank.fill_(d**-0.5)  # unit vectors; touches every page, as a real bank would
    mem.filled.fill_(capacity)
    r["recompute"] = timeit(mem._recompute_statistics, 1, warmup=0)
    groups = torch.arange(g).repeat_interleave(pushes)
    rows = F.normalize(torch.randn(g * pushes, d), dim=-1)
    r["push"] = timeit(lambda: mem.push(groups, rows), repeats)

    pred = GMMPredictor(
        256,
        k,
        embed_dim=d,
        num_components=m,
        memory_size=1,
        memory_init="empty",
        pushes_per_step=pushes,
        push_rows="all",
    ).train()
    pred.memory = mem  # the full bank above
    feats, labels = torch.randn(n, 256), torch.randint(0, k, (n,))

    def forward_push():
        pred(feats, labels)
        pred.flush()

    def m_step():
        pred.received_data.fill_(True)  # every component updated (else em_update skips them)
        pred.em_update()

    r["forward_push"] = timeit(forward_push, repeats)
    r["m_step"] = timeit(m_step, repeats)
    r["bank_bytes"] = mem.bank.numel() * mem.bank.element_size()
    return r


def rows_for(k, r, m=5, pushes=20):
    """Markdown rows [what, ms, reference, ratio, note] for one measure() result."""
    ratio = r["loglik"] / r["bare"]
    return [
        [
            f"log-likelihood, two-GEMM form, C={k}",
            f"{r['loglik']:.1f}",
            f"2 bare GEMMs {r['bare']:.1f} ms",
            f"{ratio:.2f}x bare",
            verdict(ratio, LOGLIK_TARGET),
        ],
        [
            f"log-likelihood, naive broadcast, C={k}",
            f"{r['naive']:.0f}",
            "two-GEMM form",
            f"{r['naive'] / r['loglik']:.1f}x slower",
            "the release's form",
        ],
        [
            f"Sinkhorn E-step (3 iters), C={k}",
            f"{r['sinkhorn']:.1f}",
            "log-likelihood",
            f"{r['sinkhorn'] / r['loglik']:.2f}x",
            "",
        ],
        [
            f"memory push, {pushes} rows x {k * m} groups, C={k}",
            f"{r['push']:.2f}",
            "log-likelihood",
            f"{r['push'] / r['loglik']:.3f}x",
            f"full bank, {r['bank_bytes'] / 2**20:.0f} MiB",
        ],
        [
            f"train forward + flush, C={k}",
            f"{r['forward_push']:.1f}",
            "log-likelihood",
            f"{r['forward_push'] / r['loglik']:.2f}x",
            "projection, E-step, set aside, push",
        ],
        [
            f"M-step from running statistics, C={k}",
            f"{r['m_step']:.2f}",
            f"recompute from bank {r['recompute']:.0f} ms",
            f"{r['recompute'] / r['m_step']:.0f}x faster",
            f"all {k * m} components",
        ],
    ]


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=32768)
    ap.add_argument("--classes", type=int, nargs="+", default=[19, 150])
    ap.add_argument("--components", type=int, default=5)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--memory-size", type=int, default=32000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n, m, d = args.n, args.components, args.dim
    print(f"# GMM core, N={n}, M={m}, D={d}; {machine()}\n")
    rows = []
    for k in args.classes:
        rows += rows_for(k, measure(k, n, m, d, args.repeats, args.memory_size), m)
    print(table(rows, ["what", "ms", "reference", "ratio", "note"]))


if __name__ == "__main__":
    main()
