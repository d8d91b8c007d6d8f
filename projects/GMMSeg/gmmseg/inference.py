"""The one way to get a model for inference: its config, the model, and the model on one image.

Every tool, study and export that runs a trained model goes through here (evaluation:
gmmseg/engine/evaluate.py, on a model built here):

- `inference_setup(config_file, opts, register, device)`: the frozen config of a tool (dataset
  registrations imported, `config_file` and KEY VALUE `opts` merged, a DATASETS.FOLDER dataset
  registered);
- `inference_config(cfg)`: a copy whose GMMs are built without their memory bank
  (MODEL.GMM.MEMORY_LAYOUT "none": inference reads means and stds only; the bank is training
  state, GBs for ADE20K);
- `build_inference_model(cfg, weights)`: the model of `inference_config(cfg)`, in eval mode, with
  the checkpoint loaded safely and checked against the config (GMMSegCheckpointer: weights-only,
  memory-mapped, so a training checkpoint's bank is never read);
- `ImageSegmenter(cfg, weights)`: that model on one (H, W, 3) BGR image, with detectron2's
  DefaultPredictor pre-processing (the test-time resize, cfg.INPUT.FORMAT); deploy's
  ExportedSegmenter is the same for an exported file.
"""

import logging
import os
from typing import Optional, Sequence

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from .checkpoint import GMMSegCheckpointer
from .config import load_config
from .data.folder_dataset import setup_folder_dataset
from .data.registration_modules import import_registration_modules

__all__ = ["inference_setup", "inference_config", "build_inference_model", "ImageSegmenter"]

logger = logging.getLogger(__name__)


def inference_setup(
    config_file: str,
    opts: Sequence[str] = (),
    register: Sequence[str] = (),
    device: Optional[str] = None,
):
    """The frozen config of an inference tool: the --register modules imported (your dataset
    registrations), `config_file` and the KEY VALUE `opts` merged, a DATASETS.FOLDER dataset
    registered (its class names; NUM_CLASSES 0 -> their count), MODEL.DEVICE set if given."""
    import_registration_modules(register)
    cfg = load_config(config_file, opts)
    if device is not None:
        cfg.MODEL.DEVICE = device
    setup_folder_dataset(cfg)
    cfg.freeze()
    return cfg


def inference_config(cfg):
    """A copy of `cfg` whose GMM is built without its memory bank (MODEL.GMM.MEMORY_LAYOUT
    "none"): for evaluation and the inference tools, which read only means and stds. Loading a
    checkpoint into such a model skips the bank without reading it."""
    out = cfg.clone()
    out.defrost()
    out.MODEL.GMM.MEMORY_LAYOUT = "none"
    if cfg.is_frozen():
        out.freeze()
    return out


def build_inference_model(cfg, weights: Optional[str] = None, resume: bool = False):
    """The model of `cfg` for inference (no GMM memory bank, eval mode, on cfg.MODEL.DEVICE) with
    `weights` loaded (default cfg.MODEL.WEIGHTS; "" keeps the initialisation, with a warning).
    `resume`: the last checkpoint of cfg.OUTPUT_DIR instead when there is one (train_net
    --eval-only --resume)."""
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    model = build_model(inference_config(cfg))
    checkpointer = GMMSegCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    if resume and checkpointer.has_checkpoint():
        checkpointer.resume_or_load(weights, resume=True)
    elif weights:
        if not os.path.isfile(weights) and "://" not in weights:
            raise FileNotFoundError(f"MODEL.WEIGHTS {weights!r} is not a file")
        checkpointer.load(weights)
    else:
        logger.warning("MODEL.WEIGHTS is empty: the model keeps its initialisation")
    model.eval()
    return model


class ImageSegmenter:
    """The inference model of `cfg` (build_inference_model) for one image at a time:
    (H, W, 3) uint8 BGR -> the model's output dict ("sem_seg" (K, H, W), "anomaly_score" (H, W)
    for models with one, ...) at the image's size. The image is converted to cfg.INPUT.FORMAT and
    resized as at test time (shortest edge INPUT.MIN_SIZE_TEST, longest at most MAX_SIZE_TEST),
    as detectron2's DefaultPredictor does."""

    def __init__(self, cfg, weights: Optional[str] = None):
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise ValueError(
                f"INPUT.FORMAT {cfg.INPUT.FORMAT!r}: ImageSegmenter reads RGB or BGR models"
            )
        self.model = build_inference_model(cfg, weights)
        self.input_format = cfg.INPUT.FORMAT
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)

    @torch.no_grad()
    def __call__(self, image_bgr: np.ndarray) -> dict:
        image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
        height, width = image.shape[:2]
        image = self.resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(
            np.ascontiguousarray(image.transpose(2, 0, 1)), dtype=torch.float32
        )
        return self.model([{"image": tensor, "height": height, "width": width}])[0]
