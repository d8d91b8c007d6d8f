#!/usr/bin/env python
"""EM memory and communication per rank at W = 1, 2, 4 GLOO processes: the release vs this project.

Per rank and setting (ADE20K: 150 classes x M = 8; Cityscapes: 19 x 5; D = 64, 32,000 entries
per (class, component), PUSHES_PER_STEP 20, M-step every 5 iterations):

- bank bytes: the buffers of the feature memory each rank builds for the full-size setting
  (on the meta device: sizes without allocation; memory.py's shapes are checked against a real
  small instance in benchmarks/run_all.py). The release replicates the bank on every rank; this
  project shards it (MODEL.GMM.MEMORY_LAYOUT "auto": each rank holds every W-th slot).
- EM bytes per iteration: the bytes each rank hands to torch.distributed collectives
  (all_gather, all_reduce, gather are wrapped and counted) while W processes run the real
  GMMPredictor forward + flush() + em_update() on the EMHook schedule for 5 iterations (one
  M-step), averaged per iteration; labels put every class in every rank's batch (the upper
  bound: every (class, component) has >= 20 candidates). The release's per-iteration all-gathers
  (every embedding, label and assignment: N x (D + 1 + M) float32) are run and counted too.

A ring all-gather sends (W - 1) x its input per rank and a ring all-reduce 2 (W - 1) / W x its
input; `formula()` gives both for any W (used for 8 and 64 ranks).

    python benchmarks/bench_em_scaling.py [--worlds 1 2 4]
"""

import argparse
import math
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

D, L, PUSHES, INTERVAL = 64, 32000, 20, 5
# per-rank pixels at stride 4: ADE20K 2 images of 512x512, Cityscapes 2 images of 512x1024
SETTINGS = {
    "ADE20K": dict(classes=150, components=8, pixels=2 * 128 * 128),
    "Cityscapes": dict(classes=19, components=5, pixels=2 * 128 * 256),
}
_COLLECTIVES = ("all_gather", "all_reduce", "gather")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingCollectives:
    """Wraps torch.distributed's all_gather / all_reduce / gather; counts the bytes of this rank's input."""

    def __init__(self):
        self.bytes = {name: 0 for name in _COLLECTIVES}
        self._orig = {name: getattr(dist, name) for name in _COLLECTIVES}

    def __enter__(self):
        for name in _COLLECTIVES:

            def counting(*args, _name=name, **kwargs):
                tensor = args[1] if _name == "all_gather" else args[0]
                self.bytes[_name] += tensor.numel() * tensor.element_size()
                return self._orig[_name](*args, **kwargs)

            setattr(dist, name, counting)
        return self

    def __exit__(self, *exc):
        for name, fn in self._orig.items():
            setattr(dist, name, fn)


def bank_bytes(classes, components, world, rank, layout):
    """Bytes of (bank, everything else) of the memory a rank builds, on the meta device."""
    from gmmseg.gmm import FeatureMemory, ShardedFeatureMemory

    with torch.device("meta"):
        if layout == "sharded":
            mem = ShardedFeatureMemory(
                classes * components, L, D, init="empty", shard_rank=rank, num_shards=world
            )
        else:
            mem = FeatureMemory(classes * components, L, D, init="empty")
    sizes = {n: b.numel() * b.element_size() for n, b in mem.named_buffers()}
    return sizes.pop("bank"), sum(sizes.values())


def _every_class_labels(n, classes, gen):
    """(n,) labels in which every class holds n / classes pixels, in random order."""
    return torch.arange(n)[torch.randperm(n, generator=gen)] % classes


def _worker(rank, world, port, setting, iters, results):
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
        )
    from gmmseg.gmm import GMMPredictor

    s = SETTINGS[setting]
    k, m, n = s["classes"], s["components"], s["pixels"]
    torch.manual_seed(0)
    # a small real bank: the EM's collectives do not depend on the capacity
    p = GMMPredictor(
        D,
        k,
        embed_dim=D,
        num_components=m,
        memory_size=64,
        pushes_per_step=PUSHES,
        push_rows="all",
        memory_init="random",
        memory_layout="sharded" if world > 1 else "replicated",
    ).train()
    gen = torch.Generator().manual_seed(1000 + rank)
    ours = {name: 0 for name in _COLLECTIVES}
    release = 0
    for it in range(iters):
        x, labels = torch.randn(n, D, generator=gen), _every_class_labels(n, k, gen)
        with torch.no_grad():
            p(x, labels)
        with CountingCollectives() as c:
            p.em_update() if it % INTERVAL == 0 else p.flush()  # EMHook: M-step at 0, 5, ...
        for name in _COLLECTIVES:
            ours[name] += c.bytes[name]
        if world > 1:  # the release: all-gather of embeddings, labels, assignments of every pixel
            with CountingCollectives() as c:
                for t in (torch.randn(n, D), labels.float(), torch.rand(n, m)):
                    dist.all_gather([torch.empty_like(t) for _ in range(world)], t)
            release += c.bytes["all_gather"]
    bank = {layout: bank_bytes(k, m, world, rank, layout) for layout in ("replicated", "sharded")}
    results[(setting, world, rank)] = {
        "ours": {k_: v / iters for k_, v in ours.items()},
        "release": release / iters,
        "bank": bank,
    }
    if world > 1:
        dist.destroy_process_group()


def measure(worlds=(1, 2, 4), settings=tuple(SETTINGS), iters=INTERVAL):
    """{(setting, W): {"release": B/iter, "ours": {collective: B/iter}, "ours_total": B/iter,
    "bank": {"replicated"|"sharded": (bank B, rest B)}}}: the largest rank's figures."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    results = mp.Manager().dict()
    for setting in settings:
        for w in worlds:
            if w == 1:
                _worker(0, 1, 0, setting, iters, results)
            else:
                mp.start_processes(
                    _worker,
                    args=(w, _free_port(), setting, iters, results),
                    nprocs=w,
                    start_method="spawn",
                )
    torch.set_num_threads(threads)
    out = {}
    for setting in settings:
        for w in worlds:
            per_rank = [results[(setting, w, r)] for r in range(w)]
            top = max(per_rank, key=lambda r: sum(r["ours"].values()))
            out[(setting, w)] = {
                "release": max(r["release"] for r in per_rank),
                "ours": top["ours"],
                "ours_total": sum(top["ours"].values()),
                "bank": {
                    lay: max((r["bank"][lay] for r in per_rank), key=sum)
                    for lay in ("replicated", "sharded")
                },
            }
    return out


def formula(setting, world):
    """Per-rank bytes for `world` ranks: bank (replicated / sharded, incl. statistics and pointers),
    EM input handed to collectives per iteration and sent on a ring, release and this project."""
    s = SETTINGS[setting]
    k, m, n = s["classes"], s["components"], s["pixels"]
    g = k * m
    stats = g * (2 * D + 1) * 8 + 2 * g * 8  # int64 statistics + ptr + filled
    bank_rep = g * L * D * 4
    bank_shard = g * math.ceil(L / world) * D * 4
    release_in = n * (D + 1 + m) * 4
    counts_in = (g + k + 1) * 8
    rows_in = math.ceil(PUSHES * g / world) * (D + 1) * 4  # even split of the <= 20 rows per group
    reduce_in = g * (2 * D + 1) * 8 / INTERVAL  # every class present: every group's statistics
    ring = world - 1
    return {
        "bank_release": bank_rep,
        "bank_replicated": bank_rep + stats,
        "bank_sharded": bank_shard + stats,
        "release_in": release_in if world > 1 else 0,
        "release_sent": ring * release_in,
        "ours_in": (counts_in + rows_in + reduce_in) if world > 1 else 0,
        "ours_sent": ring * (counts_in + rows_in) + 2 * ring / world * reduce_in,
    }


def _fmt(b):
    return (
        f"{b / 2**30:.2f} GiB"
        if b >= 2**30
        else (f"{b / 2**20:.1f} MiB" if b >= 2**20 else f"{b / 2**10:.0f} KiB")
    )


def tables(res, worlds, formula_worlds=(8, 64)):
    lines = [
        "| setting | W | bank per rank: release (replicated) | this project (sharded) | EM B/iter per rank: "
        "release | this project (counts + rows + all-reduce / 5) | release / this project |",
        "|---|---|---|---|---|---|---|",
    ]
    for (setting, w), r in res.items():
        rep, sh = r["bank"]["replicated"], r["bank"]["sharded"]
        o = r["ours"]
        ratio = f"{r['release'] / r['ours_total']:.0f}x" if r["ours_total"] else "-"
        lines.append(
            f"| {setting} | {w} | {_fmt(rep[0])} | {_fmt(sh[0])} (+ {_fmt(sh[1])} statistics, pointers) | "
            f"{r['release']:,.0f} | {r['ours_total']:,.0f} ({o['all_gather']:,.0f} + {o['all_reduce']:,.0f}) "
            f"| {ratio} |"
        )
    lines += [
        "",
        "Formulas (per rank; `in` = bytes handed to the collectives per iteration, `sent` = bytes a "
        "ring algorithm sends per rank per iteration):",
        "",
        "| setting | W | bank: release | bank: this project | EM in: release | EM in: this project | "
        "EM sent: release | EM sent: this project |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting in SETTINGS:
        for w in tuple(worlds) + tuple(formula_worlds):
            f = formula(setting, w)
            lines.append(
                f"| {setting} | {w} | {_fmt(f['bank_release'])} | {_fmt(f['bank_sharded'])} | "
                f"{_fmt(f['release_in'])} | {_fmt(f['ours_in'])} | {_fmt(f['release_sent'])} | "
                f"{_fmt(f['ours_sent'])} |"
            )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    print(tables(measure(tuple(args.worlds)), args.worlds))


if __name__ == "__main__":
    main()
