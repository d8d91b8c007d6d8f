#!/usr/bin/env python
"""Does the GMM fit the features? Held-out log-likelihood along a training run.

For every checkpoint of a per-pixel GMM run (model_XXXXXXX.pth, model_final.pth), on held-out
images: the mean log-likelihood of known pixels under their own class, log p(x | y) (max over
the class's components, as the model scores), the same under the best class, and, on an anomaly
split, the best-class log-likelihood of the anomaly pixels. Also the mean GMM std. A GMM that
fits the features makes the first rise during training while the anomaly pixels stay behind.

    python benchmarks/gmm_fit_curve.py --config configs/demo/fpn_r18_gmm.yaml \
        --run output/study_demo_a/release_bootstrap --known gmmseg_demo_val --anomaly gmmseg_demo_anomaly

Prints a Markdown table and writes <run>/fit_curve.json.
"""
import argparse
import glob
import json
import os
import re

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog

from common import table
from gmmseg import add_gmmseg_config
from gmmseg.checkpoint import GMMSegCheckpointer
from gmmseg.data.anomaly_datasets import load_anomaly_mask
from gmmseg.engine import Trainer


def _checkpoints(run):
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
    if len(found) > 1 and found[-1][0] is None:  # model_final.pth: keep it only if it is later
        final = torch.load(found[-1][1], map_location="cpu", weights_only=True).get("iteration")
        if final is not None and final + 1 == found[-2][0]:
            found.pop()
        else:
            found[-1] = (None if final is None else final + 1, found[-1][1])
    return [(0, None)] + found  # 0: the model as initialised, before any training


class _Capture:
    """Forward hooks: the decoder's feature-map shape and the predictor's class log-likelihoods."""

    def __init__(self, head):
        self.shape, self.ll = None, None
        head.decoder.register_forward_hook(self._decoder)
        head.predictor.register_forward_hook(self._predictor)

    def _decoder(self, module, inputs, output):
        x = output[0] if isinstance(output, tuple) else output
        self.shape = x.shape[-2:]

    def _predictor(self, module, inputs, output):
        self.ll = output["log_likelihood"].detach()


def _to_grid(labels, grid, stride, fill):
    """(H, W) labels -> (h, w) at the feature grid of the padded input, as the head does."""
    h, w = grid
    padded = torch.full((h * stride, w * stride), fill, dtype=torch.long)
    hh, ww = min(labels.shape[0], h * stride), min(labels.shape[1], w * stride)
    padded[:hh, :ww] = labels[:hh, :ww]
    return F.interpolate(padded[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()


@torch.no_grad()
def measure(cfg, weights, known, anomaly, max_images):
    torch.manual_seed(cfg.SEED)
    model = Trainer.build_model(cfg)
    if weights:
        GMMSegCheckpointer(model).load(weights)
    model.eval()
    head = model.sem_seg_head
    cap = _Capture(head)
    stride = head.common_stride
    out = {"mean_std": float(head.predictor.stds.mean())}

    own, best = [], []
    for i, batch in enumerate(Trainer.build_test_loader(cfg, known)):
        if i >= max_images:
            break
        model(batch)
        ll = cap.ll.view(*cap.shape, -1)
        y = _to_grid(batch[0]["sem_seg"], cap.shape, stride, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
        valid = y != cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        own.append(ll[valid].gather(1, y[valid][:, None])[:, 0])
        best.append(ll[valid].amax(-1))
    out["known_own_class_ll"] = float(torch.cat(own).mean())
    out["known_best_class_ll"] = float(torch.cat(best).mean())

    if anomaly:
        masks = {d["file_name"]: d for d in DatasetCatalog.get(anomaly)}
        anom, kn = [], []
        for i, batch in enumerate(Trainer.build_test_loader(cfg, anomaly)):
            if i >= max_images:
                break
            model(batch)
            ll = cap.ll.view(*cap.shape, -1).amax(-1)
            d = masks[batch[0]["file_name"]]
            mask = load_anomaly_mask(d["anomaly_mask_file_name"], d.get("anomaly_mask_convention", "ours"))
            mask = torch.from_numpy(np.asarray(mask, dtype=np.int64))
            mask = F.interpolate(mask[None, None].float(), size=batch[0]["image"].shape[-2:], mode="nearest")[0, 0].long()
            m = _to_grid(mask, cap.shape, stride, 255)
            anom.append(ll[m == 1])
            kn.append(ll[m == 0])
        out["anomaly_best_class_ll"] = float(torch.cat(anom).mean())
        out["anomaly_split_known_best_class_ll"] = float(torch.cat(kn).mean())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--run", required=True, help="OUTPUT_DIR of a finished run with periodic checkpoints")
    ap.add_argument("--known", required=True, help="held-out dataset with sem_seg labels")
    ap.add_argument("--anomaly", default=None, help="dataset with anomaly masks (optional)")
    ap.add_argument("--max-images", type=int, default=1000)
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides the run was trained with")
    args = ap.parse_args()
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(args.config)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.PREDICTOR.NAME != "gmm":
        raise SystemExit(f"{args.config}: MODEL.PREDICTOR.NAME is {cfg.MODEL.PREDICTOR.NAME!r}; this measures a GMM")
    rows, results = [], []
    for it, path in _checkpoints(args.run):
        r = {"iteration": it, "checkpoint": os.path.basename(path) if path else "(initialisation)"}
        r.update(measure(cfg, path, args.known, args.anomaly, args.max_images))
        results.append(r)
        rows.append([r["checkpoint"], r["iteration"], f"{r['known_own_class_ll']:.1f}", f"{r['known_best_class_ll']:.1f}",
                     f"{r.get('anomaly_best_class_ll', float('nan')):.1f}", f"{r['mean_std']:.3f}"])
        print(rows[-1], flush=True)
    json.dump(results, open(os.path.join(args.run, "fit_curve.json"), "w"), indent=1)
    print(table(rows, ["checkpoint", "iteration", "known: log p(x|y)", "known: max_c log p(x|c)",
                       "anomaly: max_c log p(x|c)", "mean std"]))


if __name__ == "__main__":
    main()
