#!/usr/bin/env python
"""GMM core hot paths: log-likelihood (matmul form vs the release's broadcast vs bare GEMMs),
Sinkhorn E-step, memory push, M-step. Prints a Markdown table of times and ratios.

    python benchmarks/bench_gmm_core.py [--n 32768] [--classes 19 150]
"""
import argparse
import math

import torch
import torch.nn.functional as F

from common import machine, table, timeit
from gmmseg.gmm import FeatureMemory, GMMPredictor, gaussian_log_likelihood, sinkhorn_assign


def broadcast_log_likelihood(x, means, stds, chunk=2048):
    """The release's form: (N, G, D) broadcast, in float32 (chunked so C=150 fits in RAM)."""
    d = x.shape[1]
    const = -0.5 * d * math.log(2 * math.pi) - stds.log().sum(-1)
    out = []
    for xs in x.split(chunk):
        z = (xs[:, None] - means[None]) / stds[None]
        out.append(const[None] - 0.5 * z.pow(2).sum(-1))
    return torch.cat(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=32768)
    ap.add_argument("--classes", type=int, nargs="+", default=[19, 150])
    ap.add_argument("--components", type=int, default=5)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n, m, d = args.n, args.components, args.dim
    print(f"# GMM core, N={n}, M={m}, D={d}; {machine()}\n")
    rows = []
    for k in args.classes:
        g = k * m
        x = F.normalize(torch.randn(n, d), dim=-1)
        means = F.normalize(torch.randn(g, d), dim=-1)
        stds = 0.1 + torch.rand(g, d)
        w1, w2 = torch.randn(d, g), torch.randn(d, g)
        t_fast = timeit(lambda: gaussian_log_likelihood(x, means, stds), args.repeats)
        t_bare = timeit(lambda: (x @ w1, x @ w2), args.repeats)
        t_naive = timeit(lambda: broadcast_log_likelihood(x, means, stds), max(1, args.repeats // 2), warmup=1)
        rows.append([f"log-likelihood C={k}", f"{t_fast:.1f}", f"bare 2 GEMMs {t_bare:.1f}",
                     f"{t_fast / t_bare:.2f}x bare (target <= 2x)", f"broadcast {t_naive:.0f} ms: {t_naive / t_fast:.0f}x slower"])

        cls = torch.randint(0, k, (n,))
        own = torch.randn(n, m) * 10 - 100
        t_sk = timeit(lambda: sinkhorn_assign(own, cls, k, num_iters=3), args.repeats)
        rows.append([f"Sinkhorn E-step C={k} (3 iters)", f"{t_sk:.1f}", "", f"{t_sk / t_fast:.2f}x log-likelihood", ""])

        pred = GMMPredictor(256, k, embed_dim=d, num_components=m, memory_size=32000, memory_init="empty",
                            push_correct_only=False)
        pred.train()
        feats, labels = torch.randn(n, 256), torch.randint(0, k, (n,))

        def push_step():
            pred(feats, labels)
            pred.flush()
        t_fwd_learn = timeit(push_step, args.repeats)
        t_mstep = timeit(pred.em_update, args.repeats)
        bank_mb = pred.memory.bank.numel() * pred.memory.bank.element_size() / 2**20
        rows.append([f"train forward + push C={k}", f"{t_fwd_learn:.1f}", "", "", f"bank {bank_mb:.0f} MiB"])
        rows.append([f"M-step C={k}", f"{t_mstep:.2f}", "", "from running statistics", ""])
        full = timeit(lambda: pred.memory._recompute_statistics(), 1, warmup=0)
        rows.append([f"M-step statistics by reading the bank C={k}", f"{full:.0f}", "", f"{full / t_mstep:.0f}x slower", ""])
    print(table(rows, ["what", "ms", "reference", "ratio", "note"]))


if __name__ == "__main__":
    main()
