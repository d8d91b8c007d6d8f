#!/usr/bin/env python
"""Does the project work on this GPU? One command, one table: the environment, then each check
with its result and numbers.

    python benchmarks/gpu_check.py                # on a CUDA machine (expected: a minute or two)
    python benchmarks/gpu_check.py --device cpu --repeats 0   # the checks' logic only, on the CPU

NOT RUN ON A GPU YET: it was written on machines without one (issue 20) and has only been run
with --device cpu, where it checks its own code, not CUDA. The first GPU run is the first
evidence for everything below; please put its table in the issue.

Checks (each returns PASS / FAIL and a detail; tests/test_gpu.py runs the same functions, marked
`gpu`, skipped without CUDA):
- env: torch and its CUDA version, the GPU, its compute capability among torch's architectures,
  whether detectron2's compiled _C loads (not needed by this project; the PyPI build wants
  libcudart.so.12, torch 2.14.1 from PyPI is a CUDA 13.0 build: docs/GPU.md);
- fit_devices: gmm_fit's per-image sums with log-likelihoods on the GPU and labels on the CPU
  (issue 20 item 1);
- order_free: the E-step's segment sums, the window sums of em_loops > 1 and one em_update with
  EM_LOOPS 3 are bitwise the same for permuted rows, with the GPU's atomics (item 2);
- bf16_ids: (class, component) ids of the rows set aside under bfloat16 autocast, K = 150, M = 5
  (item 4);
- amp_fp16 / amp_bf16: one training step of the demo model (FrozenBN ResNet-18 + FPN + GMM)
  under autocast vs float32: loss within 2%, update cosine > 0.98, GMM means within 2e-3; and
  the step time of each precision (item 7);
- ckpt_to_gpu: a checkpoint with a bank loads (memory-mapped) into a model on the GPU (item 5);
- deform_attn: when the official MultiScaleDeformableAttention extension is installed, its output
  and gradients against the PyTorch path (item 8).
"""
import argparse
import copy
import itertools
import os
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")


# ----------------------------------------------------------------------------- environment
def check_env(device):
    parts = [f"torch {torch.__version__}", f"CUDA {torch.version.cuda}"]
    ok = True
    if device == "cuda":
        if not torch.cuda.is_available():
            return False, "; ".join(parts + ["torch.cuda.is_available() is False"])
        major, minor = torch.cuda.get_device_capability()
        arch = f"sm_{major}{minor}"
        ok = arch in torch.cuda.get_arch_list()
        parts += [torch.cuda.get_device_name(), f"{arch} ({'in' if ok else 'NOT in'} torch's {torch.cuda.get_arch_list()})",
                  f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}"]
    try:
        import detectron2._C  # noqa: F401
        parts.append("detectron2._C loads")
    except ImportError as e:
        parts.append(f"detectron2._C does not load ({e}; not needed here)")
    return ok, "; ".join(parts)


# ----------------------------------------------------------------------------- item 1
def check_fit_devices(device):
    from gmmseg.analysis.gmm_fit import anomaly_pixel_sums, known_pixel_sums

    ll = torch.tensor([[[-1.0, -2.0, -3.0], [-4.0, -0.5, -6.0]],
                       [[-7.0, -8.0, -0.25], [-1.5, -9.0, -2.5]]], device=device)
    known = known_pixel_sums(ll, torch.tensor([[1, 1], [255, 2]]), 255)
    anomaly = anomaly_pixel_sums(ll, torch.tensor([[1, 0], [255, 1]]))
    ok = known.tolist() == [-5.0, -3.0, 3.0] and anomaly.tolist() == [-2.5, 2.0, -0.5, 1.0]
    return ok, f"sums on {known.device}, CPU labels"


# ----------------------------------------------------------------------------- item 2
def _em_loops_means(device, perm):
    from gmmseg.gmm import GMMPredictor

    torch.manual_seed(0)
    p = GMMPredictor(8, 3, embed_dim=8, num_components=2, memory_size=100000, pushes_per_step=100000,
                     push_correct_only=False, memory_init="empty", mean_momentum=0.5, em_loops=3).to(device).train()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(perm.numel(), 8, generator=g), torch.randint(0, 3, (perm.numel(),), generator=g)
    p(x.to(device), y.to(device))
    p.flush()
    p._window = [torch.cat(p._window)[perm.to(device)]]
    p.em_update()
    return torch.cat([p.means.flatten(), p.stds.flatten()])


def check_order_free(device):
    from gmmseg.gmm import segment_logsumexp
    from gmmseg.gmm.fixed_point import group_sums

    g = torch.Generator().manual_seed(0)
    n, m, k = 200000, 5, 150
    v = (torch.randn(n, m, generator=g) * 3).to(device)
    seg = torch.randint(0, k, (n,), generator=g).to(device)
    perm = torch.randperm(n, generator=g).to(device)
    same_lse = torch.equal(segment_logsumexp(v, seg, k), segment_logsumexp(v[perm], seg[perm], k))
    a, b = group_sums(seg, v, k), group_sums(seg[perm], v[perm], k)
    same_sums = all(torch.equal(x, y) for x, y in zip(a, b))
    cpu = group_sums(seg.cpu(), v.cpu(), k)  # exact integers: the GPU's equal the CPU's
    same_as_cpu = all(torch.equal(x.cpu(), y) for x, y in zip(a, cpu))
    rows = 4000
    em_same = torch.equal(_em_loops_means(device, torch.arange(rows)),
                          _em_loops_means(device, torch.randperm(rows, generator=g)))
    # the control: float index_add_ in another order (on a GPU: the atomics' order) differs
    fsum = torch.zeros(k, m, device=device, dtype=v.dtype)
    float_same = torch.equal(fsum.clone().index_add_(0, seg, v), fsum.clone().index_add_(0, seg[perm], v[perm]))
    ok = same_lse and same_sums and same_as_cpu and em_same
    return ok, (f"logsumexp {same_lse}, group sums {same_sums} (= CPU {same_as_cpu}), em_loops=3 update {em_same}; "
                f"control: float index_add_ same {float_same}")


# ----------------------------------------------------------------------------- item 4
def check_bf16_ids(device):
    from gmmseg.gmm import GMMPredictor

    k, m = 150, 5
    p = GMMPredictor(32, k, embed_dim=16, num_components=m, memory_size=8, pushes_per_step=2,
                     push_correct_only=False, memory_init="empty").to(device).train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4096, 32, generator=g).to(device)
    y = (100 + torch.arange(4096) % (k - 100)).to(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        p(x, y)
    rows = torch.cat(p._pending)
    ids = rows[:, 0]
    wrong_class = int((ids.long() // m != y).sum())
    ok = rows.dtype == torch.float32 and torch.equal(ids, ids.round()) and wrong_class == 0
    return ok, f"{rows.shape[0]} rows, {wrong_class} in a wrong class, dtype {rows.dtype}"


# ----------------------------------------------------------------------------- item 7 (AMP)
def _demo_cfg(device, *opts):
    from gmmseg import load_config

    return load_config(DEMO_CONFIG, ["MODEL.DEVICE", device, "MODEL.GMM.MEMORY_SIZE", "50", "MODEL.GMM.PROJECTION_NORM", "BN",
                                     "MODEL.RESNETS.NORM", "FrozenBN", *opts])


def _batch(n=2, h=64, w=96):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        labels = torch.zeros(h, w, dtype=torch.long)
        labels[:, w // 3:] = 1 + torch.arange(h)[:, None] % 3
        image = (labels.float()[None].expand(3, -1, -1) * 50 + 20 * torch.rand(3, h, w, generator=g)).to(torch.uint8)
        out.append({"image": image, "sem_seg": labels, "height": h, "width": w})
    return out


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _step(model, device, precision, repeats=0):
    """(loss, update vector, GMM means after em_update, ms per step over `repeats` more steps)."""
    from detectron2.engine import SimpleTrainer
    from detectron2.utils.events import EventStorage

    from gmmseg.engine.amp import MixedPrecisionTrainer

    model = copy.deepcopy(model).train()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = itertools.repeat(_batch())
    trainer = (SimpleTrainer(model, data, opt) if precision is None
               else MixedPrecisionTrainer(model, data, opt, precision=precision))
    with EventStorage(0) as storage:
        trainer.iter = 0
        trainer.run_step()
        loss = storage.latest()["total_loss"][0]
        gmm = model.sem_seg_head.predictor
        gmm.em_update()
        update = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
        means = gmm.means.clone()
        ms = float("nan")
        if repeats:
            _sync(device)
            t0 = time.perf_counter()
            for i in range(repeats):
                trainer.iter = i + 1
                trainer.run_step()
                gmm.flush()
            _sync(device)
            ms = (time.perf_counter() - t0) / repeats * 1e3
    return loss, update, means, ms


def check_amp(device, precision, repeats=5):
    from gmmseg.engine import Trainer

    torch.manual_seed(0)
    model = Trainer.build_model(_demo_cfg(device))
    loss32, up32, means32, ms32 = _step(model, device, None, repeats)
    loss, up, means, ms = _step(model, device, precision, repeats)
    rel_loss = abs(loss - loss32) / abs(loss32)
    cos = float(torch.nn.functional.cosine_similarity(up.double(), up32.double(), dim=0))
    dmeans = float((means - means32).abs().max())
    ok = rel_loss < 0.02 and cos > 0.98 and dmeans < 2e-3
    return ok, (f"loss {loss:.4f} vs fp32 {loss32:.4f} ({rel_loss:.2%}), update cosine {cos:.4f}, "
                f"means max diff {dmeans:.1e}; step {ms:.1f} ms vs fp32 {ms32:.1f} ms")


# ----------------------------------------------------------------------------- item 5
def check_ckpt_to_gpu(device):
    from gmmseg.checkpoint import GMMSegCheckpointer
    from gmmseg.engine import Trainer

    torch.manual_seed(0)
    saved = Trainer.build_model(_demo_cfg("cpu"))
    state = saved.state_dict()
    key = "sem_seg_head.predictor.memory.bank"
    state[key].normal_()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model_0000009.pth")
        torch.save({"model": state, "iteration": 9}, path)
        model = Trainer.build_model(_demo_cfg(device))
        GMMSegCheckpointer(model).load(path)
    bank = model.sem_seg_head.predictor.memory.bank
    ok = bank.device.type == device and torch.equal(bank.cpu(), state[key])
    return ok, f"bank {tuple(bank.shape)} on {bank.device}, equal {ok}"


# ----------------------------------------------------------------------------- item 8 (deformable attention)
def check_deform_attn(device):
    from gmmseg.modeling.mask_former import deform_attn_op
    from gmmseg.modeling.mask_former.pixel_decoder import ms_deform_attn_sample

    if deform_attn_op.compiled_op() is None:
        return True, "MultiScaleDeformableAttention not installed: the PyTorch path runs"
    shapes = [(8, 12), (4, 6)]
    g = torch.Generator().manual_seed(0)
    value = torch.randn(2, sum(h * w for h, w in shapes), 4, 8, generator=g).to(device).requires_grad_()
    loc = torch.rand(2, 50, 4, 2, 4, 2, generator=g).to(device).requires_grad_()
    w = torch.rand(2, 50, 4, 2, 4, generator=g).to(device).requires_grad_()
    if not deform_attn_op.uses_compiled_op(value):
        return True, f"installed, not used for values on {device}"
    out = deform_attn_op.deform_attn(value, shapes, loc, w, ms_deform_attn_sample)
    ref = ms_deform_attn_sample(value, shapes, loc, w)
    grads = [torch.autograd.grad(o.sum(), (value, loc, w)) for o in (out, ref)]
    diff = max([float((out - ref).abs().max())] + [float((a - b).abs().max()) for a, b in zip(*grads)])
    return diff < 1e-4, f"compiled op vs PyTorch path: max difference {diff:.1e} (outputs and gradients)"


CHECKS = {
    "env": check_env,
    "fit_devices": check_fit_devices,
    "order_free": check_order_free,
    "bf16_ids": check_bf16_ids,
    "amp_fp16": lambda device, repeats: check_amp(device, torch.float16, repeats),
    "amp_bf16": lambda device, repeats: check_amp(device, torch.bfloat16, repeats),
    "ckpt_to_gpu": check_ckpt_to_gpu,
    "deform_attn": check_deform_attn,
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--only", nargs="*", choices=sorted(CHECKS), help="run these checks only")
    ap.add_argument("--repeats", type=int, default=5, help="training steps timed per precision (0: no timing)")
    args = ap.parse_args(argv)
    rows, failed = [], 0
    for name in args.only or CHECKS:
        t0 = time.perf_counter()
        try:
            ok, detail = CHECKS[name](args.device, args.repeats) if name.startswith("amp") else CHECKS[name](args.device)
        except Exception as e:  # a check that crashes is a result too; the others still run
            ok, detail = False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        failed += not ok
        rows.append((name, "PASS" if ok else "FAIL", f"{time.perf_counter() - t0:.1f}", detail.replace("|", "/")))
    print(f"gmmseg GPU check, --device {args.device}")
    print("| check | result | s | detail |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
