"""The score-family study's tables: mean +- std over seeds, "beyond the spread", the verdict."""

import json

import pytest

from gmmseg.studies.score_family import (
    best_scores,
    collect,
    duel,
    family_table,
    summary,
    verdict_table,
)


def _write(tmp_path, model, seed, dataset, anomaly):
    path = tmp_path / model / f"seed{seed}" / dataset / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({dataset: {"anomaly": anomaly}}))


@pytest.fixture
def study(tmp_path):
    # GMM: likelihood 90 / 92 on far (mean 91, std 1.414), 80 / 82 on near; twin: energy 85 / 86 on far,
    # 83 / 83 on near
    for seed, (far, near) in enumerate([(90.0, 80.0), (92.0, 82.0)], 1):
        _write(
            tmp_path, "gmm", seed, "far", {"likelihood_AUROC": far, "likelihood_FPR95": 100 - far}
        )
        _write(
            tmp_path,
            "gmm",
            seed,
            "near",
            {"likelihood_AUROC": near, "likelihood_FPR95": 100 - near},
        )
    for seed, far in enumerate([85.0, 86.0], 1):
        _write(tmp_path, "twin", seed, "far", {"energy_AUROC": far, "msp_AUROC": 70.0})
        _write(tmp_path, "twin", seed, "near", {"energy_AUROC": 83.0, "msp_AUROC": 84.0 + seed})
    return {
        m: collect(str(tmp_path / m / "*" / "{dataset}" / "results.json"), ["far", "near"])
        for m in ("gmm", "twin")
    }


def test_collect_and_summary(study):
    assert sorted(study["gmm"]) == ["seed1", "seed2"]
    s = summary(study["gmm"], "far")
    assert s["likelihood_AUROC"] == pytest.approx((91.0, 2**0.5, 2))
    assert summary(study["twin"], "near")["msp_AUROC"] == pytest.approx((85.5, 0.5**0.5, 2))


def test_duel_is_beyond_the_larger_spread():
    assert duel((91.0, 1.414, 2), (85.5, 0.707, 2)) == "wins"  # gap 5.5 > 1.414
    assert duel((91.0, 1.414, 2), (90.0, 0.2, 2)) == "level"  # gap 1.0 <= 1.414
    assert duel((81.0, 1.414, 2), (85.5, 0.707, 2)) == "loses"
    assert duel((91.0, 0.0, 1), (85.5, 0.7, 2)) == "no spread"
    # FPR95: lower is better
    assert duel((10.0, 1.0, 2), (20.0, 1.0, 2), "FPR95") == "wins"


def test_best_scores_and_verdict(study):
    near = summary(study["twin"], "near")
    assert [s for s, _ in best_scores(near)] == ["msp", "energy"]  # 85.5 > 83.0
    table = verdict_table(study["gmm"], study["twin"], ["far", "near"])
    assert "twin's energy 85.5 +- 0.7" in table and "twin's msp 85.5 +- 0.7" in table
    row = next(line for line in table.splitlines() if line.startswith("| likelihood"))
    assert row == "| likelihood | 91.0 +- 1.4 wins | 81.0 +- 1.4 loses | no |"


def test_family_table_rows(study):
    table = family_table(study, ["far", "near"], ["AUROC"])
    assert "| gmm | likelihood | 91.0 +- 1.4 | 81.0 +- 1.4 | 2,2 |" in table
    assert "| twin | msp | 70.0 +- 0.0 | 85.5 +- 0.7 | 2,2 |" in table


def test_a_file_without_the_named_dataset_is_an_error(tmp_path):
    path = tmp_path / "s1" / "far" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"other": {"anomaly": {}}}))
    with pytest.raises(ValueError, match="no anomaly results for 'far'"):
        collect(str(tmp_path / "*" / "{dataset}" / "results.json"), ["far"])
