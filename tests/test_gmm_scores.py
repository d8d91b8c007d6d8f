"""gmmseg.analysis.gmm_scores.gmm_score_candidates (studies/gmm_score_study.py) on the
hand-set GMM of test_gmm_fit (K = 2, M = 2, D = 3), every candidate from the formulas in plain
Python: component log-likelihoods l_cm = log N(x; mu_cm, diag s_cm^2)."""

import math

import pytest
import torch
from test_gmm_fit import E1, E2, E3, E4, MEANS, STDS, _tiny_model, class_ll, log_normal

from gmmseg.analysis.gmm_scores import gmm_score_candidates


def _layer_norm(values, eps=1e-5):
    m = sum(values) / len(values)
    var = sum((v - m) ** 2 for v in values) / len(values)
    return [(v - m) / math.sqrt(var + eps) for v in values]


@pytest.mark.parametrize("x", [E1, E2, E3, E4])
def test_every_candidate_matches_its_formula(x):
    predictor = _tiny_model().sem_seg_head.predictor
    got = gmm_score_candidates(predictor, torch.tensor([x]))
    comps = [(c, m) for c in range(2) for m in range(2)]
    ll = {cm: log_normal(x, MEANS[cm[0]][cm[1]], STDS[cm[0]][cm[1]]) for cm in comps}
    per_class = [class_ll(x, c) for c in range(2)]
    top = max(ll.values())
    expected = {
        "max_class_ll": -max(per_class),
        "marginal": -(top + math.log(sum(math.exp(v - top) for v in ll.values()))),
        "mahalanobis": min(
            0.5 * sum(((a - b) / s) ** 2 for a, b, s in zip(x, MEANS[c][m], STDS[c][m]))
            for c, m in comps
        ),
        "cosine": -max(
            sum(a * b for a, b in zip(x, MEANS[c][m])) / math.sqrt(sum(b * b for b in MEANS[c][m]))
            for c, m in comps
        ),
        "max_logit_ln": -max(_layer_norm(per_class)),
    }
    for name, value in expected.items():
        assert float(got[name][0]) == pytest.approx(value, abs=1e-4), name
    assert int(got["_pred"][0]) == max(range(2), key=lambda c: per_class[c])
    assert float(got["_best_ll"][0]) == pytest.approx(max(per_class), abs=1e-4)
