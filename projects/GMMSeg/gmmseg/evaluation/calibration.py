"""CalibrationEvaluator: expected calibration error of max softmax(sem_seg) vs pixel correctness.

Over the non-void pixels of the semantic ground truth ("sem_seg_file_name" of each image's
dataset dict, matched by "file_name"; void = the metadata's ignore_label, default 255).
Streaming: only the per-bin sums (count, sum of confidences, number correct) are kept, so memory
does not grow with the dataset and processes merge exactly by addition.
"""

import json
import logging
import os
from collections import OrderedDict
from typing import Optional

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.mapper import make_sem_seg_loading_fn
from .metrics import CALIBRATION_BINS, calibration_bin_sums, expected_calibration_error

__all__ = ["CalibrationEvaluator"]


class CalibrationEvaluator(DatasetEvaluator):
    """ECE (equal-width bins, default CALIBRATION_BINS = 15) of the confidence max_c softmax(sem_seg)_c.

    Results: {"calibration": {"ECE", "MCE", "accuracy", "confidence"}} in percent (MCE = the
    largest |accuracy - confidence| of a non-empty bin; accuracy / confidence = pixel accuracy
    and mean confidence over all evaluated pixels).
    With output_dir, evaluate() writes calibration_<dataset_name>.json (the results plus per-bin
    edges, count, accuracy and mean confidence) and calibration_<dataset_name>_reliability.png.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        num_bins: int = CALIBRATION_BINS,
        distributed: bool = True,
        *,
        model_name: Optional[str] = None,
        plots: bool = True,
    ):
        self._logger = logging.getLogger(__name__)
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._num_bins = int(num_bins)
        self._distributed = distributed
        self._model_name = model_name or "model"
        self._plots = plots
        self._gt = {
            d["file_name"]: d["sem_seg_file_name"]
            for d in DatasetCatalog.get(dataset_name)
            if "sem_seg_file_name" in d
        }
        if not self._gt:
            raise ValueError(
                f"CalibrationEvaluator: no dict of dataset '{dataset_name}' has 'sem_seg_file_name'"
            )
        self._ignore_label = getattr(MetadataCatalog.get(dataset_name), "ignore_label", 255)
        # the dataset's own label reading, with its remapping (e.g. camvid_openset_*) and checks
        self._load_label = make_sem_seg_loading_fn(dataset_name)
        self.reset()

    def reset(self):
        self._count = np.zeros(self._num_bins, np.int64)
        self._conf_sum = np.zeros(self._num_bins, np.float64)
        self._correct = np.zeros(self._num_bins, np.int64)
        self._num_images = 0

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            try:
                gt_file = self._gt[inp["file_name"]]
            except KeyError:
                raise KeyError(
                    f"CalibrationEvaluator({self._dataset_name}): no semantic label for input {inp['file_name']!r}"
                ) from None
            gt = self._load_label(gt_file, dtype=np.int64)
            logits = out["sem_seg"].detach().to("cpu", torch.float32)
            k = logits.shape[0]
            if tuple(logits.shape[1:]) != gt.shape:
                raise ValueError(
                    f"CalibrationEvaluator: prediction for {inp['file_name']!r} is "
                    f"{tuple(logits.shape[1:])}, its label {gt_file!r} is {gt.shape}"
                )
            valid = gt != self._ignore_label
            bad = valid & ((gt < 0) | (gt >= k))
            if bad.any():
                raise ValueError(
                    f"CalibrationEvaluator: label {gt_file!r} has value(s) "
                    f"{np.unique(gt[bad]).tolist()} outside [0, {k}) and not the "
                    f"ignore label {self._ignore_label}"
                )
            prob = torch.softmax(logits, 0)
            conf, pred = prob.max(0)
            valid_t = torch.from_numpy(valid)
            correct = pred[valid_t].numpy() == gt[valid]
            count, conf_sum, corr = calibration_bin_sums(
                conf[valid_t].numpy(), correct, self._num_bins
            )
            self._count += count
            self._conf_sum += conf_sum
            self._correct += corr
            self._num_images += 1

    def evaluate(self):
        count, conf_sum, correct, num_images = (
            self._count,
            self._conf_sum,
            self._correct,
            self._num_images,
        )
        if self._distributed:
            comm.synchronize()
            parts = comm.gather((count, conf_sum, correct, num_images), dst=0)
            if not comm.is_main_process():
                return {}
            count = sum(p[0] for p in parts)
            conf_sum = sum(p[1] for p in parts)
            correct = sum(p[2] for p in parts)
            num_images = sum(p[3] for p in parts)
        if num_images == 0 or count.sum() == 0:
            self._logger.warning(
                f"CalibrationEvaluator({self._dataset_name}) received no labelled pixel"
            )
            return {}
        e = expected_calibration_error(count, conf_sum, correct)
        results = OrderedDict((k, 100.0 * e[k]) for k in ("ECE", "MCE", "accuracy", "confidence"))
        self._logger.info(
            f"Calibration on {self._dataset_name} ({self._model_name}, {self._num_bins} bins, "
            f"{e['num_pixels']} pixels): ECE {results['ECE']:.2f}%, MCE {results['MCE']:.2f}%, "
            f"accuracy {results['accuracy']:.2f}%, mean confidence {results['confidence']:.2f}%"
        )
        if self._output_dir and comm.is_main_process():
            self._save(results, e, num_images)
        return OrderedDict(calibration=results)

    def _save(self, results, e, num_images) -> None:
        from .plots import plot_reliability_diagram

        os.makedirs(self._output_dir, exist_ok=True)
        prefix = os.path.join(self._output_dir, f"calibration_{self._dataset_name}")

        def listed(a):
            return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, dtype=float)]

        bins = {
            "edges": np.linspace(0, 1, self._num_bins + 1).tolist(),
            "bin_count": [int(c) for c in e["bin_count"]],
            "bin_accuracy": listed(e["bin_accuracy"]),
            "bin_confidence": listed(e["bin_confidence"]),
        }
        files = {"json": prefix + ".json"}
        if self._plots:
            files["reliability_png"] = plot_reliability_diagram(
                {
                    "bin_accuracy": e["bin_accuracy"],
                    "bin_confidence": e["bin_confidence"],
                    "bin_count": e["bin_count"],
                    "ECE": results["ECE"],
                },
                prefix + "_reliability.png",
                f"Reliability: {self._model_name} on {self._dataset_name}",
            )
        payload = dict(
            dataset=self._dataset_name,
            model=self._model_name,
            num_images=num_images,
            num_pixels=e["num_pixels"],
            num_bins=self._num_bins,
            units="percent",
            confidence_definition="max_c softmax(sem_seg logits)_c",
            **results,
            bins=bins,
            files={k: os.path.basename(v) for k, v in files.items()},
        )
        with open(files["json"], "w") as f:
            json.dump(payload, f, indent=2)
