"""What the speed benchmarks share: the per-pixel head models they time and the alternating timer.

- `head_cfg` / `build_head_model`: a ResNet + decoder + predictor model of configs/Base-PerPixel.yaml
  (CPU, plain BN) with a given decoder, predictor, class count and depth;
- `random_batch`: random images with random label maps;
- `measure_models`: median training-step and inference seconds of several models on one batch, the
  models alternating step by step (a change of machine load hits all alike), optionally under
  autocast (float16 / bfloat16), with the bytes of each model's GMM memory bank and, on CUDA, the
  GPU memory each model takes once built and the peak of its training step; `time_models`: the
  medians only. A training step is the step trainer's (detectron2's SimpleTrainer, or the
  project's MixedPrecisionTrainer under autocast: forward + backward + metrics + optimizer step)
  + the EM hook's work (flush, em_update every MODEL.GMM.UPDATE_INTERVAL steps); inference is the
  eval forward of the batch (under the same autocast).
"""

import contextlib
import itertools
import os
import statistics
import time
from typing import NamedTuple, Optional

import torch
from detectron2.engine import SimpleTrainer
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from gmmseg import load_config
from gmmseg.engine import em_modules
from gmmseg.engine.amp import MixedPrecisionTrainer
from gmmseg.solver import build_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def head_cfg(decoder, predictor, num_classes, depth, opts=()):
    cfg = load_config(os.path.join(ROOT, "configs/Base-PerPixel.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.NORM = "BN"
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    cfg.MODEL.SEM_SEG_HEAD.DECODER = decoder
    cfg.MODEL.PREDICTOR.NAME = predictor
    if decoder == "DeepLabV3PlusDecoder":
        cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res5"]
        cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res5"]
        cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 256
        cfg.MODEL.SEM_SEG_HEAD.NORM = "BN"
    cfg.merge_from_list(list(opts))
    return cfg


def build_head_model(decoder, predictor, num_classes, depth, opts=()):
    torch.manual_seed(0)
    return build_model(head_cfg(decoder, predictor, num_classes, depth, opts))


def random_batch(n, h, w, num_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.randint(0, 255, (3, h, w), generator=g).float(),
            "sem_seg": torch.randint(0, num_classes, (h, w), generator=g),
        }
        for _ in range(n)
    ]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _allocated(device):
    """Bytes the CUDA caching allocator holds for tensors on `device` (0 elsewhere)."""
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def bank_bytes(model):
    """Bytes of the memory banks of the model's EM modules (0 for a model without one)."""
    banks = [getattr(m.feature_memory(), "bank", None) for m in em_modules(model)]
    return sum(b.numel() * b.element_size() for b in banks if b is not None)


def _autocast(device, precision):
    return (
        contextlib.nullcontext()
        if precision is None
        else torch.autocast(device.type, dtype=precision)
    )


class Measurement(NamedTuple):
    train_s: float  # median training step
    infer_s: float  # median inference of the batch
    bank_bytes: int  # the GMM memory banks (0: none)
    model_bytes: Optional[
        int
    ]  # CUDA: memory_allocated after building the model minus before; None elsewhere
    step_peak_bytes: Optional[
        int
    ]  # CUDA: max over the training steps of the peak above the memory at its start


class _Runner:
    """One model with its optimizer, step trainer and EM modules; times one training step or one
    inference. `precision`: None (float32) or the autocast dtype (torch.float16 / bfloat16)."""

    def __init__(self, cfg, batch, precision=None):
        device = torch.device(cfg.MODEL.DEVICE)
        torch.manual_seed(0)
        before = _allocated(device)
        self.model = build_model(cfg)
        self.model_bytes = _allocated(device) - before if device.type == "cuda" else None
        self.device = self.model.device
        self.optimizer = build_optimizer(cfg, self.model)
        self.em = em_modules(self.model)
        self.period = cfg.MODEL.GMM.UPDATE_INTERVAL
        self.precision = precision
        data = itertools.repeat(batch)
        self.trainer = (
            SimpleTrainer(self.model, data, self.optimizer)
            if precision is None
            else MixedPrecisionTrainer(self.model, data, self.optimizer, precision=precision)
        )
        self.storage = EventStorage(0)
        self.test_batch = [{"image": x["image"]} for x in batch]
        self.steps = 0
        self.step_peak_bytes = 0 if device.type == "cuda" else None

    def _timed(self, fn):
        _sync(self.device)
        t = time.perf_counter()
        fn()
        _sync(self.device)
        return time.perf_counter() - t

    def train_step(self):
        def step():
            self.model.train()
            with self.storage:
                self.trainer.iter = self.storage.iter = self.steps
                self.trainer.run_step()
            self.steps += 1
            for m in self.em:  # the EM hook's work
                m.em_update() if self.steps % self.period == 0 else m.flush()

        if self.step_peak_bytes is None:
            return self._timed(step)
        _sync(self.device)
        start = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        seconds = self._timed(step)
        self.step_peak_bytes = max(
            self.step_peak_bytes, torch.cuda.max_memory_allocated(self.device) - start
        )
        return seconds

    def inference(self):
        def infer():
            self.model.eval()
            with torch.no_grad(), _autocast(self.device, self.precision):
                self.model(self.test_batch)

        return self._timed(infer)


def measure_models(cfgs, batch, warmup, iters, precision=None):
    """{name: Measurement} of each model of `cfgs` ({name: config}) on `batch`; the models
    alternate step by step, so a change of machine load affects all alike. `precision`: None
    (float32) or the autocast dtype of training and inference."""
    runners = {name: _Runner(cfg, batch, precision) for name, cfg in cfgs.items()}
    times = {name: ([], []) for name in runners}
    for what in (0, 1):
        for i in range(warmup + iters):
            for name, r in runners.items():
                t = r.train_step() if what == 0 else r.inference()
                if i >= warmup:
                    times[name][what].append(t)
    return {
        name: Measurement(
            statistics.median(tr),
            statistics.median(inf),
            bank_bytes(r.model),
            r.model_bytes,
            r.step_peak_bytes,
        )
        for (name, (tr, inf)), r in zip(times.items(), runners.values())
    }


def time_models(cfgs, batch, warmup, iters, precision=None):
    """Median train-step and inference seconds per model, {name: (train s, inference s)}
    (measure_models without the memory figures)."""
    return {
        name: (m.train_s, m.infer_s)
        for name, m in measure_models(cfgs, batch, warmup, iters, precision).items()
    }
