#!/usr/bin/env python
"""Bytes each rank sends per iteration for the EM: this project vs the release.

The release (GMMSeg, mmseg) all-gathers, every iteration, every pixel embedding of the batch at
feature resolution (N x D float32), its label (N float32) and its Sinkhorn assignment (N x M
float32), and every rank pushes from that. Here each rank sets aside at most PUSHES_PER_STEP
embeddings per (class, component) and only those rows ([group id, e_1..e_D], float32) are
all-gathered (gmmseg.gmm.distributed.all_gather_rows: one 8-byte row count, then the rows padded
to the largest count of any rank).

The script runs W processes (GLOO on localhost), each with a Cityscapes-like batch, through the
real GMMPredictor forward + flush(), and through the release's three all-gathers, counting the
bytes each rank hands to torch.distributed.all_gather (for W = 2 exactly what it sends; a ring
all-gather sends (W - 1) times that, so the ratio does not depend on W).

    python benchmarks/bench_em_communication.py [--world-size 2] [--images 2] [--height 512 --width 1024]
"""

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# Cityscapes train pixel frequencies of the 19 classes (approximate), for the "typical" labels
CITYSCAPES_FREQ = [
    36.9,
    6.1,
    22.8,
    0.65,
    0.87,
    1.2,
    0.2,
    0.55,
    15.9,
    1.2,
    4.0,
    1.2,
    0.13,
    7.0,
    0.27,
    0.23,
    0.23,
    0.1,
    0.4,
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def labels_for(kind, num_images, h, w, num_classes, gen):
    """(num_images * h * w,) labels at feature resolution.

    "all":      every class in every image (Voronoi cells, classes in turn): the upper bound,
                every (class, component) gets >= PUSHES_PER_STEP candidates;
    "typical":  Voronoi cells with classes drawn by Cityscapes pixel frequency, 10 % void (255).
    """
    out = []
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for _ in range(num_images):
        cells = 60
        cy, cx = (
            torch.randint(0, h, (cells,), generator=gen),
            torch.randint(0, w, (cells,), generator=gen),
        )
        d = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
        cell = d.argmin(0)
        if kind == "all":
            cls = torch.arange(cells) % num_classes
        else:
            p = (
                torch.tensor(CITYSCAPES_FREQ[:num_classes])
                if num_classes <= 19
                else torch.ones(num_classes)
            )
            cls = torch.multinomial(p, cells, replacement=True, generator=gen)
        lab = cls[cell]
        if kind != "all":
            lab[torch.rand(h, w, generator=gen) < 0.1] = 255
        out.append(lab.reshape(-1))
    return torch.cat(out)


class _Counter:
    """Wraps torch.distributed.all_gather and counts the bytes of this rank's input tensor."""

    def __init__(self):
        self.bytes, self.calls = 0, 0
        self._orig = dist.all_gather

    def __enter__(self):
        def counting(tensor_list, tensor, *a, **k):
            self.bytes += tensor.numel() * tensor.element_size()
            self.calls += 1
            return self._orig(tensor_list, tensor, *a, **k)

        dist.all_gather = counting
        return self

    def __exit__(self, *exc):
        dist.all_gather = self._orig


def release_gather(e, labels, qs):
    """The release's per-iteration collectives: concat_all_gather of embeddings, labels, assignments."""
    for t in (e, labels.float(), qs):
        out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(out, t.contiguous())


def _worker(rank, world, port, args, results):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    from gmmseg.gmm import GMMPredictor

    h, w = args.height // args.stride, args.width // args.stride
    n = args.images * h * w
    torch.manual_seed(0)
    p = GMMPredictor(
        args.dim,
        args.classes,
        embed_dim=args.dim,
        num_components=args.components,
        memory_size=max(args.pushes * 4, 64),
        pushes_per_step=args.pushes,
        push_rows="all",
        memory_init="random",
    ).train()
    gen = torch.Generator().manual_seed(1000 + rank)  # different data on every rank
    res = {}
    for kind in ("all", "typical"):
        ours, theirs, t_ours, t_theirs, rows = [], [], [], [], []
        for _ in range(args.iters):
            x = torch.randn(n, args.dim, generator=gen)
            labels = labels_for(kind, args.images, h, w, args.classes, gen)
            with torch.no_grad():
                p(x, labels)
            rows.append(sum(int(r.shape[0]) for r in p._pending))
            dist.barrier()
            with _Counter() as c:
                t0 = time.perf_counter()
                p.flush()
                t_ours.append(time.perf_counter() - t0)
            ours.append(c.bytes)
            e = torch.randn(n, args.dim, generator=gen)
            qs = torch.rand(n, args.components, generator=gen)
            dist.barrier()
            with _Counter() as c:
                t0 = time.perf_counter()
                release_gather(e, labels, qs)
                t_theirs.append(time.perf_counter() - t0)
            theirs.append(c.bytes)
        res[kind] = {
            "ours": max(ours),
            "theirs": max(theirs),
            "rows": max(rows),
            "t_ours": statistics.median(t_ours) * 1e3,
            "t_theirs": statistics.median(t_theirs) * 1e3,
        }
    results[rank] = res
    dist.destroy_process_group()


KINDS = (
    ("all", "every class in every image (upper bound)"),
    ("typical", "Cityscapes class frequencies, 10 % void"),
)


def run(
    world_size=2,
    images=2,
    height=512,
    width=1024,
    stride=4,
    dim=64,
    classes=19,
    components=5,
    pushes=20,
    iters=3,
):
    """Spawn the ranks and return, per label kind, the largest figures over ranks:
    {kind: {"ours": bytes, "theirs": bytes, "rows": rows set aside, "t_ours": ms, "t_theirs": ms}},
    plus "release_formula" and "bound_formula" (bytes)."""
    args = argparse.Namespace(
        images=images,
        height=height,
        width=width,
        stride=stride,
        dim=dim,
        classes=classes,
        components=components,
        pushes=pushes,
        iters=iters,
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = mp.Manager().dict()
    mp.start_processes(
        _worker,
        args=(world_size, _free_port(), args, results),
        nprocs=world_size,
        start_method="spawn",
    )
    out = {
        kind: {
            key: max(results[r][kind][key] for r in range(world_size))
            for key in ("ours", "theirs", "rows", "t_ours", "t_theirs")
        }
        for kind, _ in KINDS
    }
    n = images * (height // stride) * (width // stride)
    out["release_formula"] = n * (dim + 1 + components) * 4
    out["bound_formula"] = 8 + classes * components * pushes * (dim + 1) * 4
    return out


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--images", type=int, default=2, help="images per rank")
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--components", type=int, default=5)
    ap.add_argument("--pushes", type=int, default=20, help="MODEL.GMM.PUSHES_PER_STEP")
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    res = run(
        args.world_size,
        args.images,
        args.height,
        args.width,
        args.stride,
        args.dim,
        args.classes,
        args.components,
        args.pushes,
        args.iters,
    )
    n = args.images * (args.height // args.stride) * (args.width // args.stride)
    k, m, d = args.classes, args.components, args.dim
    print(
        f"# EM communication per rank per iteration: {args.world_size} ranks, {args.images} images of "
        f"{args.height}x{args.width} per rank, stride {args.stride} -> N = {n} pixels per rank, "
        f"D = {d}, {k} classes x {m} components, PUSHES_PER_STEP = {args.pushes}\n"
    )
    print(
        "| labels | release: all-gather of embeddings + labels + assignments | this project: rows set aside "
        "| ratio | rows set aside (max rank) | gather time release / ours (ms, GLOO localhost) |"
    )
    print("|---|---|---|---|---|---|")
    for kind, what in KINDS:
        r = res[kind]
        print(
            f"| {what} | {r['theirs']:,} B ({r['theirs'] / 1e6:.2f} MB) | {r['ours']:,} B ({r['ours'] / 1e3:.1f} kB) | "
            f"{r['theirs'] / r['ours']:.0f}x | {r['rows']} | {r['t_theirs']:.1f} / {r['t_ours']:.2f} |"
        )
    release, bound = res["release_formula"], res["bound_formula"]
    print(
        f"\nFormulas: release N x (D + 1 + M) x 4 B = {release:,} B; this project (K x M + K + 1) x 8 B "
        f"of counts and class presence, then the rows the release's selection takes from this rank: "
        f"at most K x M x PUSHES_PER_STEP in total over all ranks, padded to the largest rank's "
        f"share, x (D + 1) x 4 B (bound: {bound:,} B, independent of the image size; about 1/W of it "
        f"with balanced ranks). A ring all-gather sends (W - 1) x these bytes per rank for both methods."
    )


if __name__ == "__main__":
    main()
