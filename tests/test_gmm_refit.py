"""Refitting a trained GMM's Gaussians without retraining (gmm/refit.py, analysis/gmm_refit.py,
tools/refit_gmm.py), on small examples whose M-step is worked out here in plain Python:

    mean = sum of the rows / |sum of the rows|;  std_d = sqrt(mean over rows of (x_d - mean_d)^2 + floor)
"""

import importlib.util
import json
import math
import os

import pytest
import torch
from test_gmm_fit import E1, E2, E3, E4, IGN, _known_loader, _tiny_model

from gmmseg.analysis.gmm_refit import collect_class_embeddings, refit_model
from gmmseg.gmm import GMMPredictor, refit_gmm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hand_m_step(rows, floor):
    s = [sum(r[d] for r in rows) for d in range(len(rows[0]))]
    norm = math.sqrt(sum(v * v for v in s))
    mean = [v / norm for v in s]
    std = [
        math.sqrt(sum((r[d] - mean[d]) ** 2 for r in rows) / len(rows) + floor)
        for d in range(len(s))
    ]
    return mean, std


def log_normal(x, mu, s):
    return (
        -len(x) / 2 * math.log(2 * math.pi)
        - sum(math.log(v) for v in s)
        - 0.5 * sum(((a - b) / v) ** 2 for a, b, v in zip(x, mu, s))
    )


def _predictor(em="sinkhorn"):
    p = GMMPredictor(2, 2, embed_dim=2, num_components=2, memory_size=4, em_algorithm=em)
    with torch.no_grad():
        p.means.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]]))
        p.stds.fill_(1.0)
    return p


# class 0: two rows near its component 0 (1, 0), two near its component 1 (0, 1); class 1: none
NEAR_0, NEAR_1 = [(1.0, 0.0), (0.8, 0.6)], [(0.0, 1.0), (-0.6, 0.8)]


def test_one_round_is_the_release_m_step_of_the_assigned_rows():
    p = _predictor()
    e = torch.tensor(NEAR_1[:1] + NEAR_0 + NEAR_1[1:])  # order must not matter
    y = torch.zeros(4, dtype=torch.long)
    before_1 = (p.means[1].clone(), p.stds[1].clone())
    history = refit_gmm(p, e, y, rounds=1, variance_floor=0.01)
    for m, rows in enumerate((NEAR_0, NEAR_1)):
        mean, std = hand_m_step(rows, 0.01)
        torch.testing.assert_close(p.means[0, m], torch.tensor(mean), rtol=0, atol=1e-6)
        torch.testing.assert_close(p.stds[0, m], torch.tensor(std), rtol=0, atol=1e-6)
    # e.g. component 0: mean (1.8, 0.6) / sqrt(3.6); std_0 = sqrt(((1 - .9487)^2 + (.8 - .9487)^2) / 2 + .01)
    assert float(p.stds[0, 0, 0]) == pytest.approx(0.14957, abs=1e-4)
    # a class with no rows keeps its Gaussians
    assert torch.equal(p.means[1], before_1[0]) and torch.equal(p.stds[1], before_1[1])
    # history: mean own-class log-likelihood of the rows before and after, by the formula
    params = [hand_m_step(NEAR_0, 0.01), hand_m_step(NEAR_1, 0.01)]
    after = sum(max(log_normal(x, *params[m]) for m in range(2)) for x in e.tolist()) / 4
    before = (
        sum(
            max(log_normal(x, mu, (1.0, 1.0)) for mu in ((1.0, 0.0), (0.0, 1.0)))
            for x in e.tolist()
        )
        / 4
    )
    assert history == pytest.approx([before, after], abs=1e-4)
    # converged: the same assignment again, the same parameters
    means = p.means.clone()
    assert refit_gmm(p, e, y, rounds=2, variance_floor=0.01)[-1] == pytest.approx(after, abs=1e-4)
    torch.testing.assert_close(p.means, means, rtol=0, atol=1e-6)


def test_a_component_that_gets_no_row_keeps_its_gaussian():
    p = _predictor(em="vanilla")  # nearest component: every row of class 0 goes to component 0
    p.variance_floor = 0.05  # the predictor's floor is the default
    refit_gmm(p, torch.tensor(NEAR_0), torch.zeros(2, dtype=torch.long), rounds=3)
    mean, std = hand_m_step(NEAR_0, 0.05)
    torch.testing.assert_close(p.means[0, 0], torch.tensor(mean), rtol=0, atol=1e-6)
    torch.testing.assert_close(p.stds[0, 0], torch.tensor(std), rtol=0, atol=1e-6)
    assert p.means[0, 1].tolist() == [0.0, 1.0] and p.stds[0, 1].tolist() == [1.0, 1.0]


def test_bad_input_is_refused_with_the_value():
    p = _predictor()
    with pytest.raises(ValueError, match=r"class ids must be in 0..1, got 0..2"):
        refit_gmm(p, torch.zeros(2, 2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"expected rows \(N, 2\)"):
        refit_gmm(p, torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="rounds must be >= 1, got 0"):
        refit_gmm(p, torch.zeros(2, 2), torch.tensor([0, 1]), rounds=0)


def test_collect_takes_the_labelled_pixels_at_the_feature_grid():
    model = _tiny_model()
    e, y = collect_class_embeddings(model, _known_loader(), IGN)
    # image A: E1 (class 0), E2 (1), E3 (1); image B: E4 (1); ignore and off-grid pixels left out
    got = sorted((int(c), tuple(round(v, 5) for v in row)) for c, row in zip(y, e.tolist()))
    want = sorted(
        (c, tuple(round(v, 5) for v in x)) for c, x in ((0, E1), (1, E2), (1, E3), (1, E4))
    )
    assert got == want
    e, y = collect_class_embeddings(model, _known_loader(), IGN, rows_per_class=1)
    assert sorted(y.tolist()) == [0, 1]
    e, y = collect_class_embeddings(model, _known_loader(), IGN, pixels_per_image=1)
    assert len(y) == 2  # one pixel of each image


def test_refit_model_refits_the_head_in_place():
    model = _tiny_model()
    p = model.sem_seg_head.predictor
    info = refit_model(model, _known_loader(), IGN, rounds=1, variance_floor=0.0)
    assert info["rows_per_class"] == {0: 1, 1: 3}
    # class 0 has one row, E1: whichever component Sinkhorn gives it becomes E1 with std sqrt(0)
    hit = [m for m in range(2) if torch.allclose(p.means[0, m], torch.tensor(E1), atol=1e-6)]
    assert len(hit) == 1 and float(p.stds[0, hit[0]].max()) < 1e-6


def test_refit_tool_writes_a_checkpoint_that_loads(tmp_path, demo_datasets_root, monkeypatch):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from gmmseg import add_gmmseg_config

    monkeypatch.setenv("DETECTRON2_DATASETS", str(demo_datasets_root))
    config = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")
    opts = ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0"]
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(config)
    cfg.merge_from_list(opts)
    model = build_model(cfg)
    trained = tmp_path / "run" / "model_final.pth"
    trained.parent.mkdir()
    DetectionCheckpointer(model, save_dir=str(trained.parent)).save("model_final")
    spec = importlib.util.spec_from_file_location(
        "refit_tool", os.path.join(ROOT, "tools", "refit_gmm.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "run" / "model_refit.pth"
    info = tool.main(
        [
            "--config-file",
            config,
            "--output",
            str(out),
            "--rounds",
            "2",
            "--pixels-per-image",
            "50",
            *opts,
            "MODEL.WEIGHTS",
            str(trained),
        ]
    )
    assert len(info["own_class_ll"]) == 3 and info["dataset"] == cfg.DATASETS.TRAIN[0]
    assert json.loads((tmp_path / "run" / "model_refit.json").read_text())["rounds"] == 2
    # the folder's last_checkpoint still names the trained model (a --resume is unaffected)
    assert (tmp_path / "run" / "last_checkpoint").read_text() == "model_final.pth"
    saved = torch.load(out, weights_only=True)["model"]
    assert not any(
        k.startswith("sem_seg_head.predictor.memory.bank") for k in saved
    )  # inference file: no bank
    again = build_model(cfg)
    DetectionCheckpointer(again).load(str(out))
    before = torch.load(trained, weights_only=True)["model"]
    after = again.state_dict()
    key = "sem_seg_head.predictor.means"
    assert not torch.equal(before[key], after[key])  # refitted
    fed = [
        k
        for k in before
        if not k.startswith("sem_seg_head.predictor.") and not k.endswith("num_batches_tracked")
    ]
    assert fed and all(torch.equal(before[k], after[k]) for k in fed)  # the network is untouched
    with pytest.raises(SystemExit, match="would overwrite the trained model"):
        tool.main(
            [
                "--config-file",
                config,
                "--output",
                str(trained),
                *opts,
                "MODEL.WEIGHTS",
                str(trained),
            ]
        )
    with pytest.raises(SystemExit, match="MODEL.WEIGHTS '.*missing.pth' is not a file"):
        tool.main(
            [
                "--config-file",
                config,
                "--output",
                str(out),
                *opts,
                "MODEL.WEIGHTS",
                str(tmp_path / "missing.pth"),
            ]
        )
