"""Helpers of the deployment tests: demo models that look trained, sample images."""

import os

import numpy as np
import torch
from detectron2.config import get_cfg

from gmmseg import add_gmmseg_config
from gmmseg.gmm import GMMPredictor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"gmm": "configs/demo/fpn_r18_gmm.yaml", "softmax": "configs/demo/fpn_r18_softmax.yaml"}


def demo_cfg(variant, *opts):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, CONFIGS[variant]))
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", *opts])
    return cfg


def trained_like(model, seed=0):
    """Move every floating tensor off its initial value; GMM stds in 0.05..0.5, unit means."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and "memory" not in name:
                t.add_(0.05 * torch.randn(t.shape, generator=g))
        for m in model.modules():
            if isinstance(m, GMMPredictor):
                m.stds.copy_(0.05 + 0.45 * torch.rand(m.stds.shape, generator=g))
                m.means.copy_(torch.nn.functional.normalize(m.means, dim=-1))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.abs_().add_(0.5)
    return model.eval()


def image_of(size, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (3, *size)).astype(np.float32)
