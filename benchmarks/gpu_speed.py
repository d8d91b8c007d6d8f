"""The `speed` rows of gpu_check.py: GMMSeg vs its softmax twin, training step and inference.

Two model pairs, K = 19 classes (Cityscapes), each GMM model against the same network with the
softmax classifier, on one synthetic batch (default 2 x 3 x 512 x 1024):

- FPN R-50: configs/Base-PerPixel.yaml (ResNet-50 + FPN decoder; benchmarks/model_timing.head_cfg);
- SegFormer MiT-B5: configs/cityscapes/segformer_mitb5_{gmm,softmax}.yaml (random weights).

Both use the GMM settings of their configs (the release's: 5 components, 32,000 entries per
component, 778 MB of bank at D = 64). For each precision (fp32, and fp16 / bf16 autocast through
the project's MixedPrecisionTrainer) the two models alternate step by step after warm-up, CUDA
synchronised around each (model_timing.measure_models); medians in ms and GMM / twin ratios; the
bank's bytes; on CUDA also the GPU memory each model takes once built (memory_allocated after
minus before: weights, buffers, the bank) and the peak of its training step above the memory at
the step's start (max_memory_allocated: activations, gradients, optimizer state).
"""

import os
import time

import torch
from model_timing import head_cfg, measure_models, random_batch

from gmmseg import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 19
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
MB = 2**20


def fpn_r50_cfg(predictor):
    return head_cfg("FPNDecoder", predictor, NUM_CLASSES, 50)


def segformer_cfg(predictor):
    return load_config(os.path.join(ROOT, f"configs/cityscapes/segformer_mitb5_{predictor}.yaml"))


MODELS = {"fpn_r50": fpn_r50_cfg, "segformer": segformer_cfg}


def pair_cfgs(build, device, opts=()):
    """{"gmm": cfg, "softmax": cfg} of one model pair on `device`, with KEY VALUE `opts`."""
    cfgs = {}
    for predictor in ("gmm", "softmax"):
        cfg = build(predictor)
        cfg.merge_from_list(["MODEL.DEVICE", device, *opts])
        if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != NUM_CLASSES:
            raise ValueError(
                f"speed: MODEL.SEM_SEG_HEAD.NUM_CLASSES is {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}, "
                f"the section compares K = {NUM_CLASSES}"
            )
        cfgs[predictor] = cfg
    return cfgs


def display_name(cfg):
    """ "FPN R-50", "SegFormer MiT-B5", ... from the config."""
    if (
        cfg.MODEL.SEM_SEG_HEAD.DECODER == "SegFormerMLPDecoder"
        and cfg.MODEL.BACKBONE.NAME == "build_mit_backbone"
    ):
        return f"SegFormer MiT-{cfg.MODEL.MIT.VARIANT.upper()}"
    return f"{cfg.MODEL.SEM_SEG_HEAD.DECODER.replace('Decoder', '')} R-{cfg.MODEL.RESNETS.DEPTH}"


def _mb(n):
    return f"{n / MB:.0f}"


def describe(gmm, twin):
    """One row's detail from two model_timing.Measurement."""
    parts = [
        f"train {gmm.train_s * 1e3:.1f} vs twin {twin.train_s * 1e3:.1f} ms ({gmm.train_s / twin.train_s:.3f}x)",
        f"inference {gmm.infer_s * 1e3:.1f} vs {twin.infer_s * 1e3:.1f} ms ({gmm.infer_s / twin.infer_s:.3f}x)",
        f"bank {gmm.bank_bytes / MB:.1f} MB",
    ]
    if gmm.model_bytes is not None:
        parts.append(
            f"GPU memory: model {_mb(gmm.model_bytes)} vs {_mb(twin.model_bytes)} MB, "
            f"step peak {_mb(gmm.step_peak_bytes)} vs {_mb(twin.step_peak_bytes)} MB"
        )
    return "; ".join(parts)


def precision_skip_reason(device, precision):
    """Why `precision` cannot run on `device`, or None."""
    if device == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bfloat16"
    return None


def _error_line(e):
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def speed_rows(
    device,
    size=(512, 1024),
    batch_size=2,
    warmup=2,
    iters=5,
    opts=(),
    models=tuple(MODELS),
    precisions=tuple(PRECISIONS),
):
    """[(name, "PASS" / "FAIL" / "SKIP", seconds, detail)]: one row per model pair and precision."""
    batch = random_batch(batch_size, *size, NUM_CLASSES)
    shape = f"{batch_size} x 3 x {size[0]} x {size[1]}"
    rows = []
    for key in models:
        try:
            cfgs = pair_cfgs(MODELS[key], device, opts)
        except Exception as e:  # a bad --speed-opts value: this pair's row says so
            rows.append((f"speed {key}", "FAIL", "0.0", _error_line(e)))
            continue
        name = display_name(cfgs["gmm"])
        for precision in precisions:
            t0 = time.perf_counter()
            skip = precision_skip_reason(device, precision)
            if skip:
                rows.append((f"speed {name} {precision}", "SKIP", "0.0", skip))
                continue
            try:
                m = measure_models(cfgs, batch, warmup, iters, PRECISIONS[precision])
                status, detail = (
                    "PASS",
                    f"{shape}, K={NUM_CLASSES}: " + describe(m["gmm"], m["softmax"]),
                )
            except Exception as e:  # one failed measurement does not stop the others
                status, detail = "FAIL", _error_line(e)
            if device == "cuda":
                torch.cuda.empty_cache()
            rows.append(
                (f"speed {name} {precision}", status, f"{time.perf_counter() - t0:.1f}", detail)
            )
    return rows
