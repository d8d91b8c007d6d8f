"""AnomalyEvaluator: pixel-level anomaly segmentation metrics (AUROC, AP, FPR95) per score.

Scores, from one forward pass (higher = more anomalous), every one the model allows, by their
names in the score table (gmmseg/scores/table.py, where each is defined):

* the model's "anomaly_scores" (its densities: "likelihood" = -max_c log p(x|c), "marginal", ...;
  ProtoSeg's "prototype"; Mask2Former's "rba", "eam", "query_likelihood"), first;
* the softmax family of "sem_seg", computed here: "msp" (as -log MSP = logsumexp(l) - max(l), the
  order of -MSP without the ties float32 softmax creates where MSP rounds to 1.0), "entropy",
  "max_logit", "energy".

Ground truth: the dataset dict of each image (matched by "file_name", as detectron2's
SemSegEvaluator does) names "anomaly_mask_file_name" and optionally "anomaly_mask_convention"
(gmmseg.data.anomaly_datasets; default "ours": 1 anomaly, 0 known, 255 void). Void pixels are
left out. Metrics over all non-void pixels of the dataset, streamed through per-score
`ScoreHistogram`s (see gmmseg.evaluation.metrics for the binning and its error bound).

Component level (SegmentMeIfYouCan, gmmseg.evaluation.components), for every score as well:
sIoU, PPV and the mean F1 of the score binarised at its best pixel-level F1 threshold over the
dataset. That threshold is known only at the end, so the masks and score maps are kept, within
`component_max_bytes` (default 512 MiB: 1 + 4 x 5 bytes per pixel, i.e. ~25 M pixels at full
resolution, e.g. CamVid's 101 val images of 360 x 480 take 367 MB); beyond it the kept maps are
subsampled by 2 per axis as often as needed (reported as "component_stride").
component_max_bytes = 0 turns the component metrics off.
"""

import json
import logging
import os
from collections import OrderedDict
from typing import Dict, Optional

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..data.anomaly_datasets import load_anomaly_mask
from ..scores import compute_scores, score_labels
from .components import ComponentStore, best_f1_threshold
from .metrics import ScoreHistogram, binary_ranking_metrics, decimate_curve, ranking_curves

__all__ = ["AnomalyEvaluator", "anomaly_scores", "SCORE_LABELS"]

#: score name -> legend label (the score table's)
SCORE_LABELS = score_labels()
_METRICS = ("AUROC", "AP", "FPR95")
_COMPONENT_METRICS = ("sIoU", "PPV", "meanF1")


def anomaly_scores(output: dict) -> "OrderedDict[str, torch.Tensor]":
    """A model's per-image output -> OrderedDict score name -> (H, W) float32 CPU tensor.

    output: {"sem_seg": (K, H, W) logits, optional "anomaly_scores": {name: (H, W)}}.
    Scores: the model's "anomaly_scores", then "msp", "entropy", "max_logit", "energy" of "sem_seg"
    ("msp" as -log MSP: same order as -MSP, see the module docstring).
    """
    logits = output["sem_seg"].detach().to("cpu", torch.float32)
    if logits.dim() != 3:
        raise ValueError(f"expected 'sem_seg' of shape (K, H, W), got {tuple(logits.shape)}")
    scores = OrderedDict()
    for name, score in output.get("anomaly_scores", {}).items():
        score = score.detach().to("cpu", torch.float32)
        if score.shape != logits.shape[1:]:
            raise ValueError(
                f"anomaly score {name!r} {tuple(score.shape)} and 'sem_seg' {tuple(logits.shape)} disagree in size"
            )
        scores[name] = score
    scores.update(compute_scores({"logits": logits}, ["msp", "entropy", "max_logit", "energy"]))
    return scores


def _score_in_native_units(name: str, values: np.ndarray) -> np.ndarray:
    """Thresholds of the internal score -> the published score's units (-MSP for "msp")."""
    if name == "msp":
        return -np.exp(-values)
    return values


class AnomalyEvaluator(DatasetEvaluator):
    """AUROC, AP and FPR at 95% TPR of every available anomaly score, over non-void pixels.

    Results: {"anomaly": {"<score>_AUROC", "<score>_AP", "<score>_FPR95", and the component
    metrics "<score>_sIoU", "<score>_PPV", "<score>_meanF1" (unless component_max_bytes = 0) for
    score the model allows (anomaly_scores)}},
    in percent.
    With output_dir, evaluate() also writes (prefix = "anomaly_<dataset_name>"):
      <prefix>.json       metrics, pixel counts, error bounds of the streaming method, file list
      <prefix>_curves.npz ROC / PR curves per score ("<score>/fpr", ... see load_anomaly_curves),
                          at most `max_curve_points` points each
      <prefix>_roc.png, <prefix>_pr.png   all scores on one figure each (if plots=True)
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        max_bins: int = 2**20,
        *,
        model_name: Optional[str] = None,
        plots: bool = True,
        max_curve_points: int = 2000,
        component_max_bytes: int = 2**29,
    ):
        """
        Args:
            dataset_name: a registered dataset whose dicts have "anomaly_mask_file_name".
            output_dir: where to write the JSON, curves and plots (None: nothing written).
            distributed: gather the histograms of all processes (detectron2.utils.comm).
            max_bins: most histogram bins per score (~20 bytes each); the resolution is float32
                (exact) until the scores occupy more bins, then halves as often as needed.
            model_name: names the model in plot titles and the JSON.
            component_max_bytes: memory for the maps the component metrics need (see the
                module docstring); 0: no component metrics.
        """
        self._logger = logging.getLogger(__name__)
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._max_bins = int(max_bins)
        ScoreHistogram(self._max_bins)  # validates the argument now
        if component_max_bytes < 0:
            raise ValueError(f"component_max_bytes must be >= 0, got {component_max_bytes}")
        self._component_max_bytes = int(component_max_bytes)
        self._model_name = model_name or "model"
        self._plots = plots
        self._max_curve_points = max_curve_points
        self._gt = {}
        for d in DatasetCatalog.get(dataset_name):
            if "anomaly_mask_file_name" in d:
                self._gt[d["file_name"]] = (
                    d["anomaly_mask_file_name"],
                    d.get("anomaly_mask_convention", "ours"),
                )
        if not self._gt:
            raise ValueError(
                f"AnomalyEvaluator: no dict of dataset '{dataset_name}' has 'anomaly_mask_file_name'"
            )
        self.reset()

    def reset(self):
        self._hists: Dict[str, ScoreHistogram] = OrderedDict()
        self._num_images = 0
        self._components = (
            ComponentStore(self._component_max_bytes) if self._component_max_bytes else None
        )

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            try:
                mask_file, convention = self._gt[inp["file_name"]]
            except KeyError:
                raise KeyError(
                    f"AnomalyEvaluator({self._dataset_name}): no anomaly mask for input {inp['file_name']!r}"
                ) from None
            mask = load_anomaly_mask(mask_file, convention)
            scores = anomaly_scores(out)
            shape = tuple(next(iter(scores.values())).shape)
            if shape != mask.shape:
                raise ValueError(
                    f"AnomalyEvaluator: prediction for {inp['file_name']!r} is {shape}, "
                    f"its anomaly mask {mask_file!r} is {mask.shape}; the model must "
                    "return outputs at the original image size"
                )
            if self._hists and list(scores) != list(self._hists):
                raise ValueError(
                    f"AnomalyEvaluator: scores {list(scores)} for {inp['file_name']!r} "
                    f"differ from the previous images' {list(self._hists)}"
                )
            valid = mask != 255
            is_anomaly = mask[valid] == 1
            valid_t = torch.from_numpy(valid)
            for name, score in scores.items():
                hist = self._hists.setdefault(name, ScoreHistogram(self._max_bins))
                values = score[valid_t].numpy()
                if np.isnan(values).any():
                    raise ValueError(
                        f"AnomalyEvaluator: NaN in the {name!r} score of {inp['file_name']!r}"
                    )
                hist.add(values, is_anomaly)
            if self._components is not None:
                self._components.add(
                    mask, {name: score.numpy().copy() for name, score in scores.items()}
                )
            self._num_images += 1

    def evaluate(self):
        hists, num_images, components = self._hists, self._num_images, self._components
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather((self._hists, self._num_images, self._components), dst=0)
            if not comm.is_main_process():
                return {}
            hists, num_images = OrderedDict(), 0
            if components is not None:
                components = ComponentStore(self._component_max_bytes)
            for part, n, store in gathered:
                num_images += n
                if components is not None:
                    components.merge(store)
                for name, h in part.items():
                    if name in hists:
                        hists[name].merge(h)
                    else:
                        hists[name] = ScoreHistogram(self._max_bins).merge(h)
        if num_images == 0:
            self._logger.warning(f"AnomalyEvaluator({self._dataset_name}) received no prediction")
            return {}

        report, curves, results = OrderedDict(), OrderedDict(), OrderedDict()
        for name, hist in hists.items():
            edges, pos, neg = hist.counts()
            m = binary_ranking_metrics(pos, neg, ascending=True)
            report[name] = {
                "description": SCORE_LABELS.get(name, name),
                "num_bins": hist.num_bins,
                "relative_bin_width": hist.relative_bin_width,
            }
            for key in _METRICS:
                results[f"{name}_{key}"] = 100.0 * m[key]
                report[name][key] = 100.0 * m[key]
                report[name][f"{key}_max_error"] = 100.0 * m[f"{key}_max_error"]
            curves[name] = self._curves(name, edges, pos, neg)
            num_pos, num_neg = m["num_positive"], m["num_negative"]
            if components is not None:
                threshold, pixel_f1 = best_f1_threshold(edges, pos, neg)
                c = components.metrics(name, threshold)
                for key in _COMPONENT_METRICS:
                    results[f"{name}_{key}"] = 100.0 * c[key]
                    report[name][key] = 100.0 * c[key]
                report[name]["components"] = {
                    "threshold": float(_score_in_native_units(name, np.array([threshold]))[0]),
                    "pixel_F1_at_threshold": 100.0 * pixel_f1,
                    "F1": [100.0 * f for f in c["F1"]],
                    "sIoU_PPV_thresholds": c["thresholds"],
                    "TP": c["TP"],
                    "FN": c["FN"],
                    "FP": c["FP"],
                    "num_gt_components": c["num_gt_components"],
                    "num_pred_components": c["num_pred_components"],
                    "stride": c["stride"],
                }
        if num_pos == 0 or num_neg == 0:
            self._logger.warning(
                f"AnomalyEvaluator({self._dataset_name}): {num_pos} anomalous and {num_neg} known "
                "pixels; AUROC/AP/FPR95 need both and are reported as NaN"
            )
        self._logger.info(self._table(report))
        if self._output_dir and comm.is_main_process():
            self._save(report, curves, num_images, num_pos, num_neg)
        return OrderedDict(anomaly=results)

    def _curves(self, name, edges, pos, neg) -> Dict[str, np.ndarray]:
        c = ranking_curves(_score_in_native_units(name, edges.astype(np.float64)), pos, neg)
        roc = decimate_curve(c["fpr"], c["tpr"], self._max_curve_points)
        pr = decimate_curve(c["recall"], c["precision"], self._max_curve_points)
        return {
            "fpr": c["fpr"][roc],
            "tpr": c["tpr"][roc],
            "roc_thresholds": c["roc_thresholds"][roc],
            "precision": c["precision"][pr],
            "recall": c["recall"][pr],
            "pr_thresholds": c["pr_thresholds"][pr],
        }

    def _table(self, report) -> str:
        comp = all("components" in r for r in report.values())
        lines = [
            f"Anomaly segmentation on {self._dataset_name} ({self._model_name}), percent:",
            f"{'score':<10} {'AUROC':>8} {'AP':>8} {'FPR95':>8}"
            + (f" {'sIoU':>8} {'PPV':>8} {'meanF1':>8}" if comp else "")
            + "   max streaming error (AUROC/AP/FPR95)",
        ]
        for name, r in report.items():
            lines.append(
                f"{name:<10} {r['AUROC']:8.2f} {r['AP']:8.2f} {r['FPR95']:8.2f}"
                + (f" {r['sIoU']:8.2f} {r['PPV']:8.2f} {r['meanF1']:8.2f}" if comp else "")
                + f"   {r['AUROC_max_error']:.1e} / {r['AP_max_error']:.1e} / {r['FPR95_max_error']:.1e}"
            )
        if comp:
            stride = next(iter(report.values()))["components"]["stride"]
            lines.append(
                "component metrics (SegmentMeIfYouCan) at each score's best pixel-F1 threshold"
                + (f", maps subsampled by {stride} (memory bound)" if stride > 1 else "")
            )
        return "\n".join(lines)

    def _save(self, report, curves, num_images, num_pos, num_neg) -> None:
        from .plots import plot_pr_curves, plot_roc_curves

        os.makedirs(self._output_dir, exist_ok=True)
        prefix = os.path.join(self._output_dir, f"anomaly_{self._dataset_name}")
        files = {"json": prefix + ".json", "curves": prefix + "_curves.npz"}
        np.savez_compressed(
            files["curves"],
            **{f"{name}/{k}": v for name, c in curves.items() for k, v in c.items()},
        )
        if self._plots:
            title = f"{self._model_name} on {self._dataset_name}"
            roc = {
                SCORE_LABELS.get(n, n): dict(
                    curves[n], AUROC=report[n]["AUROC"], FPR95=report[n]["FPR95"]
                )
                for n in curves
            }
            pr = {SCORE_LABELS.get(n, n): dict(curves[n], AP=report[n]["AP"]) for n in curves}
            files["roc_png"] = plot_roc_curves(roc, prefix + "_roc.png", f"ROC: {title}")
            files["pr_png"] = plot_pr_curves(
                pr,
                prefix + "_pr.png",
                f"Precision-recall: {title}",
                positive_rate=num_pos / max(num_pos + num_neg, 1),
            )
        payload = {
            "dataset": self._dataset_name,
            "model": self._model_name,
            "num_images": num_images,
            "num_anomalous_pixels": num_pos,
            "num_known_pixels": num_neg,
            "units": "percent",
            "method": (
                "streaming histogram over order-preserving float32 keys, exact until more "
                f"than {self._max_bins} bins are occupied, then coarsened; *_max_error are "
                "rigorous bounds on |binned - exact| (gmmseg.evaluation.metrics)"
            ),
            "component_method": (
                "SegmentMeIfYouCan sIoU (mean over ground-truth components), PPV (mean "
                "over predicted components), mean F1 over sIoU/PPV thresholds "
                "0.25..0.75; 8-connected components of score >= the best pixel-F1 "
                "threshold, void excluded (gmmseg.evaluation.components)"
                if self._component_max_bytes
                else "off"
            ),
            "scores": report,
            "files": {k: os.path.basename(v) for k, v in files.items()},
        }
        with open(files["json"], "w") as f:
            json.dump(payload, f, indent=2, allow_nan=True)
        self._logger.info(f"anomaly metrics, curves and plots written to {prefix}*")
