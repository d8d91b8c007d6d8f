"""One way to build a model for inference and to evaluate it, for every tool and study.

- `build_inference_model(cfg, weights)`: the model of `cfg` without the GMM memory bank
  (MODEL.GMM.MEMORY_LAYOUT "none": evaluation reads means and stds only), in eval mode, with the
  checkpoint loaded safely and checked against the config (GMMSegCheckpointer: weights-only,
  memory-mapped, so a training checkpoint's bank is never read).
- `write_results(results, path)`: {dataset: {task: {metric: value}}} as JSON (atomic), what
  `train_net --eval-only` writes to OUTPUT_DIR/inference/results.json and the studies read
  (evaluation itself is `train_net --eval-only`, i.e. DefaultTrainer.test with the project's
  evaluators).
"""

import json
import logging
import os
from typing import Dict, Optional, Sequence

from ..checkpoint import GMMSegCheckpointer
from ..config import inference_config
from .trainer import Trainer

__all__ = ["inference_setup", "build_inference_model", "write_results"]

logger = logging.getLogger(__name__)


def inference_setup(
    config_file: str, opts: Sequence[str] = (), register: Sequence[str] = (), device: Optional[str] = None
):
    """The frozen config of an inference tool: the --register modules imported (your dataset
    registrations), `config_file` and the KEY VALUE `opts` merged, a DATASETS.FOLDER dataset
    registered (its class names; NUM_CLASSES 0 -> their count), MODEL.DEVICE set if given."""
    from ..config import load_config
    from ..data.folder_dataset import setup_folder_dataset
    from ..data.registration_modules import import_registration_modules

    import_registration_modules(register)
    cfg = load_config(config_file, opts)
    if device is not None:
        cfg.MODEL.DEVICE = device
    setup_folder_dataset(cfg)
    cfg.freeze()
    return cfg


def build_inference_model(cfg, weights: Optional[str] = None, resume: bool = False):
    """The model of `cfg` for inference (no GMM memory bank, eval mode) with `weights` loaded
    (default cfg.MODEL.WEIGHTS; "" keeps the initialisation, with a warning). `resume`: the last
    checkpoint of cfg.OUTPUT_DIR instead when there is one (train_net --eval-only --resume)."""
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    model = Trainer.build_model(inference_config(cfg))
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


def write_results(results: Dict[str, dict], path: str) -> str:
    """Write {dataset: results} as JSON under a temporary name, then rename it; returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1, default=float)
    os.replace(path + ".tmp", path)
    return path
