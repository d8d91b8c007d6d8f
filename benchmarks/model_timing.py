"""What the speed benchmarks share: the per-pixel head models they time and the alternating timer.

- `head_cfg` / `build_head_model`: a ResNet + decoder + predictor model of configs/Base-PerPixel.yaml
  (CPU, plain BN) with a given decoder, predictor, class count and depth;
- `random_batch`: random images with random label maps;
- `time_models`: median training-step and inference seconds of several models on one batch, the
  models alternating step by step (a change of machine load hits all alike); a training step is
  forward + backward + optimizer step + the EM hook's work (flush, em_update every
  MODEL.GMM.UPDATE_INTERVAL steps).
"""
import os
import statistics
import time

import torch
from detectron2.modeling import build_model

from gmmseg import load_config
from gmmseg.engine import em_modules
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
    return [{"image": torch.randint(0, 255, (3, h, w), generator=g).float(),
             "sem_seg": torch.randint(0, num_classes, (h, w), generator=g)} for _ in range(n)]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class _Runner:
    """One model with its optimizer and EM modules; times one training step or one inference."""

    def __init__(self, cfg, batch):
        torch.manual_seed(0)
        self.model = build_model(cfg)
        self.device = self.model.device
        self.optimizer = build_optimizer(cfg, self.model)
        self.em = em_modules(self.model)
        self.period = cfg.MODEL.GMM.UPDATE_INTERVAL
        self.batch, self.test_batch = batch, [{"image": x["image"]} for x in batch]
        self.steps = 0

    def _timed(self, fn):
        _sync(self.device)
        t = time.perf_counter()
        fn()
        _sync(self.device)
        return time.perf_counter() - t

    def train_step(self):
        def step():
            self.model.train()
            losses = self.model(self.batch)
            self.optimizer.zero_grad()
            sum(losses.values()).backward()
            self.optimizer.step()
            self.steps += 1
            for m in self.em:  # the EM hook's work
                m.em_update() if self.steps % self.period == 0 else m.flush()
        return self._timed(step)

    def inference(self):
        def infer():
            self.model.eval()
            with torch.no_grad():
                self.model(self.test_batch)
        return self._timed(infer)


def time_models(cfgs, batch, warmup, iters):
    """Median train-step and inference seconds per model; the models alternate step by step, so
    a change of machine load affects both alike."""
    runners = {name: _Runner(cfg, batch) for name, cfg in cfgs.items()}
    times = {name: ([], []) for name in runners}
    for what in (0, 1):
        for i in range(warmup + iters):
            for name, r in runners.items():
                t = r.train_step() if what == 0 else r.inference()
                if i >= warmup:
                    times[name][what].append(t)
    return {name: (statistics.median(tr), statistics.median(inf)) for name, (tr, inf) in times.items()}
