"""Evaluate a model in-process, as `train_net --eval-only` does, and write the results.

- `evaluate_model(cfg, model, datasets)`: {dataset: {task: {metric: value}}} with the project's
  evaluators (Trainer.build_evaluator: mIoU, calibration, anomaly; their JSON and plots under
  OUTPUT_DIR/inference/<dataset>/), i.e. DefaultTrainer.test on those datasets;
- `write_results(results, path)`: that dict as JSON (atomic), what `train_net --eval-only` writes
  to OUTPUT_DIR/inference/results.json and the studies read.

The model comes from gmmseg.inference.build_inference_model (no memory bank, eval mode).
"""

import json
import os
from typing import Dict, Optional, Sequence

from .trainer import Trainer

__all__ = ["evaluate_model", "write_results"]


def evaluate_model(cfg, model, datasets: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    """{dataset: results} of `model` on `datasets` (default cfg.DATASETS.TEST), one dataset after
    the other, with the test loader and evaluators of the Trainer. On ranks other than the main
    one the results are empty (detectron2's evaluators gather to rank 0)."""
    datasets = tuple(cfg.DATASETS.TEST if datasets is None else datasets)
    if not datasets:
        raise ValueError("evaluate_model: no dataset to evaluate on (DATASETS.TEST is empty)")
    run_cfg = cfg.clone()
    run_cfg.defrost()
    run_cfg.DATASETS.TEST = datasets
    run_cfg.freeze()
    results = Trainer.test(run_cfg, model)
    # DefaultTrainer.test drops the dataset level when there is one dataset: put it back
    return {datasets[0]: results} if len(datasets) == 1 else dict(results)


def write_results(results: Dict[str, dict], path: str) -> str:
    """Write {dataset: results} as JSON under a temporary name, then rename it; returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1, default=float)
    os.replace(path + ".tmp", path)
    return path
