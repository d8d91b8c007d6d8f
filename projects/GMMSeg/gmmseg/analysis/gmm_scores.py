"""Which function of a trained GMM is the best anomaly score? Several candidates from one forward.

At the feature grid of a per-pixel GMM model (no retraining), for every pixel with embedding e,
component log-likelihoods l_cm = log N(e; mu_cm, s_cm), class scores l_c = max_m l_cm and logits
LayerNorm(l):

    "max_class_ll"   -max_c l_c                   (the model's anomaly_score, the paper's)
    "marginal"       -logsumexp_{c,m} l_cm        (the density of the whole mixture, uniform prior)
    "mahalanobis"    min_{c,m} 1/2 sum_d ((e_d - mu_cmd) / s_cmd)^2   (l_cm without its log-det)
    "cosine"         -max_{c,m} <e, mu_cm>        (nearest mean on the sphere)
    "max_logit_ln"   -max_c LayerNorm(l)_c        (after the class LayerNorm)

Higher = more anomalous for all. Also where the anomalies land: the classes the model predicts
for anomaly pixels, and their best-class log-likelihood against known pixels predicted as the
same class.
"""

from collections import Counter, OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluation.metrics import exact_ranking_metrics
from .head_hooks import PredictorInputs, batch_anomaly_mask, gmm_head, labels_to_grid

__all__ = ["gmm_score_candidates", "score_study"]


def gmm_score_candidates(predictor, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
    """predictor: a GMMPredictor (eval); x: (N, C_in) decoder features -> name -> (N,) scores,
    plus "_pred" (N,) the predicted class and "_best_ll" (N,) max_c l_c."""
    e = predictor.embed(x)
    comp = predictor.component_log_likelihood(e)  # (N, K, M)
    k, m, d = predictor.means.shape
    class_ll = comp.amax(-1)
    stds = predictor.current_stds().reshape(k * m, d)
    log_det = stds.log().sum(-1) + 0.5 * d * float(np.log(2 * np.pi))  # (K*M,)
    maha = -(comp.reshape(len(e), -1) + log_det)  # 1/2 sum ((e - mu) / s)^2
    out = OrderedDict()
    out["max_class_ll"] = -class_ll.amax(-1)
    out["marginal"] = -torch.logsumexp(comp.reshape(len(e), -1), -1)
    out["mahalanobis"] = maha.amin(-1)
    out["cosine"] = -(e @ F.normalize(predictor.means.reshape(k * m, d), dim=-1).T).amax(-1)
    out["max_logit_ln"] = -predictor.class_norm(class_ll).amax(-1)
    out["_pred"] = class_ll.argmax(-1)
    out["_best_ll"] = class_ll.amax(-1)
    return out


@torch.no_grad()
def score_study(model, loader, class_names=None) -> dict:
    """AUROC / AP / FPR95 (%) of every candidate on an anomaly dataset, and where the anomaly
    pixels land. model: a per-pixel GMM model in eval mode; loader: the dataset's test loader
    (batch 1, whose batches hold "anomaly_mask")."""
    head = gmm_head(model, "score_study")
    hooks, stride = PredictorInputs(head), head.common_stride
    scores, labels = {}, []
    try:
        for batch in loader:
            model(batch)
            cand = gmm_score_candidates(head.predictor, hooks.x)
            g = labels_to_grid(batch_anomaly_mask(batch[0]), hooks.shape, stride, 255).reshape(-1)
            keep = g != 255
            for name, v in cand.items():
                scores.setdefault(name, []).append(v[keep].cpu())
            labels.append(g[keep] == 1)
    finally:
        hooks.remove()
    y = torch.cat(labels).numpy()
    pred, best_ll = (
        torch.cat(scores.pop("_pred")).numpy(),
        torch.cat(scores.pop("_best_ll")).numpy(),
    )
    report = {"num_anomalous": int(y.sum()), "num_known": int((~y).sum())}
    for name, v in scores.items():
        met = exact_ranking_metrics(torch.cat(v).double().numpy(), y)
        report[name] = {k: 100 * float(met[k]) for k in ("AUROC", "AP", "FPR95")}
    names = class_names or [str(c) for c in range(int(pred.max()) + 1)]
    landing = Counter(pred[y].tolist())
    report["anomalies_predicted_as"] = {
        names[c]: round(100 * n / max(y.sum(), 1), 1) for c, n in landing.most_common()
    }
    report["best_class_ll"] = {
        names[c]: {
            "anomaly": float(best_ll[y & (pred == c)].mean()),
            "known": float(best_ll[~y & (pred == c)].mean()) if (~y & (pred == c)).any() else None,
        }
        for c, _ in landing.most_common(4)
    }
    return report
