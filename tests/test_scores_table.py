"""The anomaly score table (gmmseg/scores/table.py): each score against a hand-computed value."""

import math

import pytest
import torch

from gmmseg.scores import SCORES, available_scores, compute_scores, register_score
from gmmseg.scores.table import log_marginal

# two pixels, K = 2: logits (2, 0) and (1, 1)
LOGITS = torch.tensor([[2.0, 1.0], [0.0, 1.0]])


def test_softmax_family_by_hand():
    s = compute_scores({"logits": LOGITS})
    assert list(s) == ["msp", "entropy", "max_logit", "energy"]
    lse = [math.log(math.exp(2) + 1), math.log(2 * math.e)]
    p = math.exp(2) / (math.exp(2) + 1)
    torch.testing.assert_close(s["msp"], torch.tensor([lse[0] - 2, math.log(2.0)]))
    torch.testing.assert_close(
        s["entropy"], torch.tensor([-(p * math.log(p) + (1 - p) * math.log(1 - p)), math.log(2.0)])
    )
    torch.testing.assert_close(s["max_logit"], torch.tensor([-2.0, -1.0]))
    torch.testing.assert_close(s["energy"], torch.tensor([-lse[0], -lse[1]]))


def test_density_scores_by_hand():
    ll = torch.tensor([[30.0, 10.0], [25.0, 12.0]])  # (K = 2, 2 pixels)
    s = compute_scores({"log_likelihood": ll, "similarity": torch.tensor([[0.9, 0.1], [0.5, 0.7]])})
    torch.testing.assert_close(s["likelihood"], torch.tensor([-30.0, -12.0]))
    torch.testing.assert_close(s["prototype"], torch.tensor([-0.9, -0.7]))
    # marginal of K = 1, M = 2 components with log N = 0 and log 2: log((1 + 2) / 2)
    comp = torch.tensor([[[0.0, math.log(2.0)]]])
    torch.testing.assert_close(log_marginal(comp), torch.tensor([math.log(1.5)]))
    torch.testing.assert_close(
        compute_scores({"log_marginal": torch.tensor([1.5])})["marginal"], torch.tensor([-1.5])
    )


def test_mask_classification_scores_by_hand():
    # pixel 1: no class claims it (scores 0) -> RbA 0; pixel 2: class 0 strongly (2.0), class 1 0.5
    mask_scores = torch.tensor([[0.0, 2.0], [0.0, 0.5]])
    s = compute_scores(
        {
            "mask_scores": mask_scores,
            "query_mass": torch.tensor([0.25, 0.9]),
            "query_likelihood": torch.tensor([40.0, 33.0]),
        }
    )
    torch.testing.assert_close(s["rba"], torch.tensor([0.0, -(math.tanh(2.0) + math.tanh(0.5))]))
    torch.testing.assert_close(s["eam"], torch.tensor([0.75, 0.1]))
    torch.testing.assert_close(s["query_likelihood"], torch.tensor([-40.0, -33.0]))
    # the likelihood-weighted RbA reads its own ingredient: sum_q p_q(k) m_q lambda_q
    weighted = torch.tensor([[0.0, 0.3], [0.0, 0.1]])
    s = compute_scores({"weighted_mask_scores": weighted}, ["rba_likelihood"])
    torch.testing.assert_close(
        s["rba_likelihood"], torch.tensor([0.0, -(math.tanh(0.3) + math.tanh(0.1))])
    )


def test_availability_and_errors_name_the_score_and_ingredient():
    assert available_scores(["logits", "log_likelihood"]) == [
        "msp",
        "entropy",
        "max_logit",
        "energy",
        "likelihood",
    ]
    assert "likelihood_ratio" in available_scores(["log_likelihood", "log_background"])
    with pytest.raises(ValueError, match="unknown anomaly score 'gmm'"):
        compute_scores({"logits": LOGITS}, ["gmm"])
    with pytest.raises(ValueError, match=r"'likelihood' needs \['log_likelihood'\]"):
        compute_scores({"logits": LOGITS}, ["likelihood"])
    with pytest.raises(ValueError, match="registered twice"):
        register_score("msp", "again", "logits")(lambda logits: logits)
    with pytest.raises(ValueError, match="unknown ingredients"):
        register_score("new", "x", "features")
    assert "new" not in SCORES


def test_scores_work_on_maps_of_any_shape():
    logits = torch.randn(3, 4, 5)
    s = compute_scores({"logits": logits}, ["energy"])
    assert s["energy"].shape == (4, 5)
    torch.testing.assert_close(s["energy"], -torch.logsumexp(logits, 0))


def test_score_ingredients_of_plain_and_fitted_scores():
    from gmmseg.scores import score_ingredients

    assert score_ingredients("energy") == ("logits",)
    assert score_ingredients("likelihood") == ("log_likelihood",)
    assert score_ingredients("likelihood_ratio") == ("log_likelihood", "log_background")
    # a fitted score reads what the scores it standardises read, in INGREDIENTS order
    assert score_ingredients("max_logit_std") == ("logits",)
    assert score_ingredients("likelihood_energy") == ("logits", "log_likelihood")
    assert score_ingredients("query_likelihood_energy") == ("logits", "query_likelihood")
    with pytest.raises(ValueError, match="'no_such_score'"):
        score_ingredients("no_such_score")
