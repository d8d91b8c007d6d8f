"""Does the GMM fit the features? Held-out log-likelihoods of a per-pixel GMM model.

On held-out images with labels: the mean log-likelihood of known pixels under their own class,
log p(x | y) (max over the class's components, as the model scores), and under the best class;
on an anomaly split, the best-class log-likelihood of the anomaly pixels and of the known pixels
of the same images. Measured along a run (one checkpoint after another, studies/gmm_fit_curve.py
and `make demo`), a GMM that fits the features makes the known-pixel likelihood rise from its
value at initialisation while the anomaly pixels stay below the known ones.
"""

import glob
import os
import re

import torch

from ..data.mapper import build_sem_seg_test_loader
from ..inference import build_inference_model
from .head_hooks import PredictorInputs, batch_anomaly_mask, gmm_head, labels_to_grid

__all__ = [
    "heldout_log_likelihoods",
    "known_pixel_sums",
    "anomaly_pixel_sums",
    "fit_curve",
    "fit_curve_table",
    "run_checkpoints",
]


def _mean(total, n):
    return total / n if n else float("nan")


def known_pixel_sums(ll, labels, ignore_value=255):
    """ll: (h, w, K) class log-likelihoods on any device; labels: (h, w) class ids or
    `ignore_value`, on any device (labels_to_grid makes them on the CPU). Returns float64 (3,) on
    ll's device: the sums over the labelled pixels of log p(x | y) and of max_c log p(x | c), and
    their number. No host synchronisation, no data-dependent shapes."""
    y = labels.to(ll.device)
    valid = y != ignore_value
    own = ll.gather(-1, torch.where(valid, y, 0)[..., None])[..., 0].double()
    best = ll.amax(-1).double()
    zero = own.new_zeros(())
    return torch.stack(
        [
            torch.where(valid, own, zero).sum(),
            torch.where(valid, best, zero).sum(),
            valid.sum().double(),
        ]
    )


def anomaly_pixel_sums(ll, mask):
    """ll: (h, w, K) on any device; mask: (h, w) 1 anomaly, 0 known, other values ignored, on any
    device. Returns float64 (4,) on ll's device: the sum of max_c log p(x | c) over the anomaly
    pixels, their number, the same sum over the known pixels, their number."""
    m = mask.to(ll.device)
    best = ll.amax(-1).double()
    zero = best.new_zeros(())
    out = []
    for value in (1, 0):
        sel = m == value
        out += [torch.where(sel, best, zero).sum(), sel.sum().double()]
    return torch.stack(out)


@torch.no_grad()
def heldout_log_likelihoods(model, known_loader, ignore_value=255, anomaly_loader=None):
    """model: a PerPixelSegmentor with a GMM predictor, in eval mode; loaders: detectron2 test
    loaders (batch 1) of a dataset with "sem_seg" labels and, optionally, of an anomaly dataset
    (its batches hold "anomaly_mask", as the test loader's mapper makes them).

    Returns {"known_own_class_ll", "known_best_class_ll", "mean_std"} and, with an anomaly split,
    {"anomaly_best_class_ll", "anomaly_split_known_best_class_ll"}: means over pixels, in nats.
    """
    head = gmm_head(model, "heldout_log_likelihoods")
    cap, stride = PredictorInputs(head), head.common_stride
    try:
        sums = 0  # [own-class ll, best-class ll, pixels] of the known pixels, on the model's device
        for batch in known_loader:
            model(batch)
            y = labels_to_grid(batch[0]["sem_seg"], cap.shape, stride, ignore_value)
            sums = sums + known_pixel_sums(cap.grid(), y, ignore_value)
        own, best, n = sums.tolist() if torch.is_tensor(sums) else (0.0, 0.0, 0)
        out = {
            "known_own_class_ll": _mean(own, n),
            "known_best_class_ll": _mean(best, n),
            "mean_std": float(head.predictor.current_stds().mean()),
        }
        if anomaly_loader is not None:
            sums = 0  # [ll of anomaly pixels, their number, ll of known pixels, their number]
            for batch in anomaly_loader:
                model(batch)
                m = labels_to_grid(batch_anomaly_mask(batch[0]), cap.shape, stride, 255)
                sums = sums + anomaly_pixel_sums(cap.grid(), m)
            a, na, k, nk = sums.tolist() if torch.is_tensor(sums) else (0.0, 0, 0.0, 0)
            out["anomaly_best_class_ll"] = _mean(a, na)
            out["anomaly_split_known_best_class_ll"] = _mean(k, nk)
        return out
    finally:
        cap.remove()


def run_checkpoints(run):
    """[(iteration, path)] of the checkpoints of a run directory, in order, starting with
    (0, None) for the model as initialised; model_final.pth only if it adds an iteration."""
    found = []
    for path in glob.glob(os.path.join(run, "model_*.pth")):
        m = re.search(r"model_(\d+)\.pth$", path)
        if m:
            found.append((int(m.group(1)) + 1, path))
        elif path.endswith("model_final.pth"):
            found.append((None, path))
    found.sort(key=lambda t: float("inf") if t[0] is None else t[0])
    if not found:
        raise FileNotFoundError(f"no model_*.pth checkpoints in {run!r}")
    if found[-1][0] is None:  # model_final.pth: its iteration; keep it only if it is later
        final = torch.load(found[-1][1], map_location="cpu", weights_only=True).get("iteration")
        if final is not None and len(found) > 1 and final + 1 == found[-2][0]:
            found.pop()
        else:
            found[-1] = (None if final is None else final + 1, found[-1][1])
    return [(0, None)] + found  # 0: the model as initialised, before any training


def fit_curve(cfg, run, known, anomaly=None, build_test_loader=build_sem_seg_test_loader):
    """heldout_log_likelihoods for every checkpoint of `run` (see run_checkpoints), as a list of
    dicts with "iteration" and "checkpoint" added. Each model is built by build_inference_model
    (means and stds, no memory bank); iteration 0 is the model as built from cfg.SEED, before any
    weights are loaded. build_test_loader: how the loaders are made (default: the Trainer's)."""
    results = []
    for it, path in run_checkpoints(run):
        torch.manual_seed(cfg.SEED)  # the initial model of the run
        model = build_inference_model(cfg, path or "")
        r = {"iteration": it, "checkpoint": os.path.basename(path) if path else "(initialisation)"}
        r.update(
            heldout_log_likelihoods(
                model,
                build_test_loader(cfg, known),
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                build_test_loader(cfg, anomaly) if anomaly else None,
            )
        )
        results.append(r)
    return results


def fit_curve_table(results) -> str:
    """A Markdown table of fit_curve's results."""
    head = [
        "iteration",
        "known: log p(x|y)",
        "known: max_c log p(x|c)",
        "anomaly: max_c log p(x|c)",
        "mean std",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [
            r["iteration"],
            r["known_own_class_ll"],
            r["known_best_class_ll"],
            r.get("anomaly_best_class_ll", float("nan")),
        ]
        lines.append(
            "| "
            + " | ".join([str(cells[0])] + [f"{v:.1f}" for v in cells[1:]])
            + f" | {r['mean_std']:.3f} |"
        )
    return "\n".join(lines)
