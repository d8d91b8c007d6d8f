"""gmmseg.analysis.gmm_fit (the held-out likelihood code of `make demo` and
studies/gmm_fit_curve.py) on a hand-built example whose expected numbers are computed here from
the Gaussian formula

    log N(x; mu, diag s^2) = -D/2 log(2 pi) - sum_d log s_d - 1/2 sum_d ((x_d - mu_d) / s_d)^2

A real PerPixelHead with a real GMMPredictor (K = 2 classes, M = 2 components, D = 3, means and
stds set by hand, identity projection) on top of a decoder that returns a fixed 2 x 2 feature map
per image (stride 2, so 4 x 4 label maps). The embeddings are zero-mean unit vectors: fixed points
of the predictor's LayerNorm + L2 normalisation, so the GMM scores exactly these vectors.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from gmmseg.analysis import gmm_fit
from gmmseg.analysis.gmm_fit import fit_curve_table, heldout_log_likelihoods, run_checkpoints
from gmmseg.gmm.predictor import GMMPredictor
from gmmseg.modeling.sem_seg.head import PerPixelHead

IGN = 255
R2, R6 = math.sqrt(2.0), math.sqrt(6.0)
# zero-mean unit vectors in R^3
E1 = (1 / R2, -1 / R2, 0.0)
E2 = (1 / R6, 1 / R6, -2 / R6)
E3 = (-1 / R2, 0.0, 1 / R2)
E4 = (0.0, 1 / R2, -1 / R2)
# MEANS[c][m], STDS[c][m]
MEANS = [[E1, E2], [E3, tuple(-v for v in E1)]]
STDS = [[(0.5, 0.5, 0.5), (1.0, 1.0, 1.0)], [(0.25, 0.5, 1.0), (2.0, 2.0, 2.0)]]


def log_normal(x, mu, s):
    """The formula of the module docstring, in plain Python floats."""
    d = len(x)
    return (
        -d / 2 * math.log(2 * math.pi)
        - sum(math.log(v) for v in s)
        - 0.5 * sum(((a - b) / v) ** 2 for a, b, v in zip(x, mu, s))
    )


def class_ll(x, c):
    """log p(x | c) as the model scores it: the best of the class's components."""
    return max(log_normal(x, MEANS[c][m], STDS[c][m]) for m in range(2))


def best_ll(x):
    return max(class_ll(x, c) for c in range(2))


def test_log_normal_helper_against_a_number_worked_out_by_hand():
    # x = mu, s = 0.5 in 3 dims: -3/2 log(2 pi) - 3 log(0.5) = -2.756815... + 2.079441... = -0.677374...
    assert log_normal(E1, E1, (0.5, 0.5, 0.5)) == pytest.approx(-0.6773740, abs=1e-6)
    # E2 against (E1, s = 1): |E1 - E2|^2 = 2 - 2 E1.E2 = 2 (orthogonal): -3/2 log(2 pi) - 1
    assert log_normal(E2, E1, (1.0, 1.0, 1.0)) == pytest.approx(
        -1.5 * math.log(2 * math.pi) - 1.0, abs=1e-12
    )


# ----------------------------------------------------------------------------- the tiny model
class _FixedMapDecoder(nn.Module):
    """Returns the (3, 2, 2) embedding map each input dict carries: features["map"] (B, 3, 2, 2)."""

    common_stride = 2
    out_channels = 3

    def forward(self, features):
        return features["map"]


class _TinySegmentor(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.sem_seg_head = head

    def forward(self, batched_inputs):
        fmap = torch.stack([d["emb_map"] for d in batched_inputs])
        results, _ = self.sem_seg_head({"map": fmap})
        return results


def _tiny_model():
    predictor = GMMPredictor(
        3, 2, embed_dim=3, num_components=2, memory_size=4, projection=nn.Identity()
    )
    with torch.no_grad():
        predictor.means.copy_(torch.tensor(MEANS, dtype=torch.float32))
        predictor.stds.copy_(torch.tensor(STDS, dtype=torch.float32))
    head = PerPixelHead(decoder=_FixedMapDecoder(), predictor=predictor, num_classes=2)
    return _TinySegmentor(head).eval()


def _emb_map(grid):
    """[[e, e], [e, e]] (row-major 2 x 2 grid of 3-vectors) -> (3, 2, 2) float32."""
    return torch.tensor(grid, dtype=torch.float32).permute(2, 0, 1).contiguous()


def _labels_4x4(grid_labels, off_grid):
    """4 x 4 labels whose stride-2 nearest downsampling (rows/cols 0 and 2) is `grid_labels`;
    every other position holds `off_grid`, which a wrong downsampling would pick up."""
    lab = torch.full((4, 4), off_grid, dtype=torch.long)
    for i in range(2):
        for j in range(2):
            lab[2 * i, 2 * j] = grid_labels[i][j]
    return lab


# image A: embeddings [[E1, E2], [E3, E4]], labels [[0, 1], [1, ignore]]; off-grid pixels class 0
# image B: embeddings [[E4, E1], [E2, E3]], labels [[1, ignore], [ignore, ignore]]; off-grid ignore
KNOWN = [
    ([[E1, E2], [E3, E4]], [[0, 1], [1, IGN]], 0),
    ([[E4, E1], [E2, E3]], [[1, IGN], [IGN, IGN]], IGN),
]
# anomaly image: embeddings [[E1, E4], [E2, E3]], mask [[1, 0], [255, 1]] (1 anomaly, 0 known, 255 void)
ANOMALY_GRID = [[E1, E4], [E2, E3]]
ANOMALY_MASK = [[1, 0], [255, 1]]


def _known_loader():
    batches = []
    for i, (grid, labels, off) in enumerate(KNOWN):
        batches.append(
            [
                {
                    "file_name": f"known{i}.png",
                    "image": torch.zeros(3, 4, 4),
                    "emb_map": _emb_map(grid),
                    "sem_seg": _labels_4x4(labels, off),
                }
            ]
        )
    return batches


def _expected_known():
    own, best = [], []
    for grid, labels, _ in KNOWN:
        for i in range(2):
            for j in range(2):
                if labels[i][j] != IGN:
                    own.append(class_ll(grid[i][j], labels[i][j]))
                    best.append(best_ll(grid[i][j]))
    assert len(own) == 4  # means over the 4 labelled pixels (3 of image A, 1 of image B)
    return sum(own) / len(own), sum(best) / len(best)


def test_known_pixels_mean_log_likelihoods_match_the_formula():
    model = _tiny_model()
    # the embeddings are fixed points of projection (identity) + LayerNorm + L2 normalisation
    x = torch.tensor([E1, E2, E3, E4])
    torch.testing.assert_close(model.sem_seg_head.predictor.embed(x), x, rtol=0, atol=1e-6)

    out = heldout_log_likelihoods(model, _known_loader(), ignore_value=IGN)
    exp_own, exp_best = _expected_known()
    assert set(out) == {"known_own_class_ll", "known_best_class_ll", "mean_std"}
    assert out["known_own_class_ll"] == pytest.approx(exp_own, rel=1e-5)
    assert out["known_best_class_ll"] == pytest.approx(exp_best, rel=1e-5)
    # the example separates the two: E2 and E4 are labelled 1 but score best under class 0
    assert exp_best - exp_own > 0.5
    # mean of the hand-set stds: (0.5 * 3 + 1 * 3 + (0.25 + 0.5 + 1) + 2 * 3) / 12
    assert out["mean_std"] == pytest.approx((1.5 + 3.0 + 1.75 + 6.0) / 12, rel=1e-6)
    # the same numbers worked out by hand (guards the helpers above as well), with
    # a = -3/2 log(2 pi) = -2.756816, log N(x; x, s = 1/2) = a + 3 log 2 = -0.677374:
    #   own:  E1 | 0: -0.677374 (comp 0);  E2 | 1: a - 3 log 2 - 1/4 = -5.086257 (comp 1, |E2 + E1|^2 = 2);
    #         E3 | 1: -0.677374 (comp 0: s = (1/4, 1/2, 1), x = mu);  E4 | 1: -4.961257 (comp 1)
    #   best: E2 -> class 0 comp 1 (x = mu, s = 1): a;  E4 -> class 0 comp 1: -2.890790
    assert exp_own == pytest.approx((-0.677374 - 5.086257 - 0.677374 - 4.961257) / 4, abs=1e-5)
    assert exp_best == pytest.approx((-0.677374 - 2.756816 - 0.677374 - 2.890790) / 4, abs=1e-5)


def test_anomaly_split_uses_the_batch_mask_on_the_grid():
    # the mask as the test loader puts it in the batch, at the 4 x 4 input size: each grid cell
    # (stride 2) is a 2 x 2 block of it
    mask = torch.from_numpy(
        np.kron(np.array(ANOMALY_MASK, dtype=np.int64), np.ones((2, 2), dtype=np.int64))
    )
    anomaly_loader = [
        [
            {
                "file_name": "anomaly0.png",
                "image": torch.zeros(3, 4, 4),
                "anomaly_mask": mask,
                "emb_map": _emb_map(ANOMALY_GRID),
            }
        ]
    ]
    out = heldout_log_likelihoods(_tiny_model(), _known_loader(), IGN, anomaly_loader)
    anomalous = [best_ll(ANOMALY_GRID[0][0]), best_ll(ANOMALY_GRID[1][1])]  # E1, E3
    known = [best_ll(ANOMALY_GRID[0][1])]  # E4; the void cell (E2) counts nowhere
    assert out["anomaly_best_class_ll"] == pytest.approx(sum(anomalous) / 2, rel=1e-5)
    assert out["anomaly_split_known_best_class_ll"] == pytest.approx(known[0], rel=1e-5)
    exp_own, exp_best = _expected_known()
    assert out["known_own_class_ll"] == pytest.approx(exp_own, rel=1e-5)
    assert out["known_best_class_ll"] == pytest.approx(exp_best, rel=1e-5)


def test_softmax_model_is_refused():
    head = PerPixelHead(decoder=_FixedMapDecoder(), predictor=nn.Linear(3, 2), num_classes=2)
    with pytest.raises(TypeError, match="needs a per-pixel model with a GMM predictor"):
        heldout_log_likelihoods(_TinySegmentor(head), _known_loader())


# ----------------------------------------------------------------------------- the table
def test_fit_curve_table_shows_the_numbers():
    exp_own, exp_best = _expected_known()
    rows = [
        {
            "iteration": 0,
            "known_own_class_ll": -59.64,
            "known_best_class_ll": -59.57,
            "anomaly_best_class_ll": -59.61,
            "mean_std": 1.0,
        },
        {
            "iteration": 100,
            "known_own_class_ll": exp_own,
            "known_best_class_ll": exp_best,
            "anomaly_best_class_ll": 28.94,
            "mean_std": 0.14964,
        },
        {
            "iteration": 200,
            "known_own_class_ll": 35.75,
            "known_best_class_ll": 36.26,
            "mean_std": 0.1094,
        },
    ]
    lines = fit_curve_table(rows).splitlines()
    assert lines[0] == (
        "| iteration | known: log p(x|y) | known: max_c log p(x|c) | anomaly: max_c log p(x|c) | mean std |"
    )
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2] == "| 0 | -59.6 | -59.6 | -59.6 | 1.000 |"
    assert lines[3] == f"| 100 | {exp_own:.1f} | {exp_best:.1f} | 28.9 | 0.150 |"
    assert lines[3] == "| 100 | -2.9 | -1.8 | 28.9 | 0.150 |"
    assert lines[4] == "| 200 | 35.8 | 36.3 | nan | 0.109 |"  # no anomaly split: nan
    assert len(lines) == 5


# ----------------------------------------------------------------------------- checkpoints of a run
def _fake_checkpoint(path, iteration):
    torch.save({"model": {}, "iteration": iteration}, path)


def test_run_checkpoints_orders_periodic_checkpoints_and_drops_a_duplicate_final(tmp_path):
    for it in (199, 99):
        _fake_checkpoint(tmp_path / f"model_{it:07d}.pth", it)
    _fake_checkpoint(tmp_path / "model_final.pth", 199)  # the same iteration as model_0000199.pth
    (tmp_path / "model_notes.pth").write_bytes(b"")  # not a checkpoint name: ignored
    assert run_checkpoints(str(tmp_path)) == [
        (0, None),
        (100, str(tmp_path / "model_0000099.pth")),
        (200, str(tmp_path / "model_0000199.pth")),
    ]


def test_run_checkpoints_keeps_a_later_final(tmp_path):
    _fake_checkpoint(tmp_path / "model_0000099.pth", 99)
    _fake_checkpoint(tmp_path / "model_final.pth", 149)
    assert run_checkpoints(str(tmp_path)) == [
        (0, None),
        (100, str(tmp_path / "model_0000099.pth")),
        (150, str(tmp_path / "model_final.pth")),
    ]


def test_run_checkpoints_with_only_a_final_checkpoint_reports_its_iteration(tmp_path):
    _fake_checkpoint(tmp_path / "model_final.pth", 23)
    assert run_checkpoints(str(tmp_path)) == [(0, None), (24, str(tmp_path / "model_final.pth"))]


def test_run_checkpoints_without_checkpoints_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model_"):
        run_checkpoints(str(tmp_path))


def test_fit_curve_evaluates_every_checkpoint_from_its_own_weights(tmp_path, monkeypatch):
    """fit_curve loads each checkpoint, through build_inference_model, into a freshly built model
    (the initial one for iteration 0) and labels the rows; with the tiny model and two hand-made
    checkpoints (stds x 1 and x 2) the rows carry the numbers of the formula for each."""
    from detectron2.config import get_cfg

    import gmmseg.inference
    from gmmseg import add_gmmseg_config

    base = _tiny_model()
    state = base.state_dict()
    torch.save({"model": state, "iteration": 9}, tmp_path / "model_0000009.pth")
    doubled = dict(state)
    doubled["sem_seg_head.predictor.stds"] = state["sem_seg_head.predictor.stds"] * 2
    torch.save({"model": doubled, "iteration": 19}, tmp_path / "model_0000019.pth")

    built = []

    def build_model(cfg):  # detectron2's build_model, as build_inference_model calls it
        built.append(cfg.MODEL.GMM.MEMORY_LAYOUT)
        m = _tiny_model().train()  # the builder must put it in eval mode
        with torch.no_grad():  # "as initialised": unit stds
            m.sem_seg_head.predictor.stds.fill_(1.0)
        return m

    def build_test_loader(cfg, name):
        assert name == "known_split"
        return _known_loader()

    monkeypatch.setattr(gmmseg.inference, "build_model", build_model)
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = IGN
    rows = gmm_fit.fit_curve(cfg, str(tmp_path), "known_split", build_test_loader=build_test_loader)
    assert built == ["none"] * 3  # one inference model (no memory bank) per checkpoint
    assert [(r["iteration"], r["checkpoint"]) for r in rows] == [
        (0, "(initialisation)"),
        (10, "model_0000009.pth"),
        (20, "model_0000019.pth"),
    ]

    def expected(scale_of_stds):
        own, best = [], []
        for grid, labels, _ in KNOWN:
            for i in range(2):
                for j in range(2):
                    if labels[i][j] == IGN:
                        continue
                    x, y = grid[i][j], labels[i][j]
                    lls = [
                        [
                            log_normal(
                                x,
                                MEANS[c][m],
                                [v * s for v, s in zip(STDS[c][m], scale_of_stds(c, m))],
                            )
                            for m in range(2)
                        ]
                        for c in range(2)
                    ]
                    own.append(max(lls[y]))
                    best.append(max(max(r) for r in lls))
        return sum(own) / len(own), sum(best) / len(best)

    unit = expected(lambda c, m: [1 / v for v in STDS[c][m]])  # stds all 1
    hand = expected(lambda c, m: [1.0] * 3)
    twice = expected(lambda c, m: [2.0] * 3)
    for row, (own, best), std in zip(rows, (unit, hand, twice), (1.0, 12.25 / 12, 2 * 12.25 / 12)):
        assert row["known_own_class_ll"] == pytest.approx(own, rel=1e-5)
        assert row["known_best_class_ll"] == pytest.approx(best, rel=1e-5)
        assert row["mean_std"] == pytest.approx(std, rel=1e-6)
        assert "anomaly_best_class_ll" not in row


def test_anomaly_batch_without_mask_is_named():
    loader = [
        [
            {
                "file_name": "frame7.png",
                "image": torch.zeros(3, 4, 4),
                "emb_map": _emb_map(ANOMALY_GRID),
            }
        ]
    ]
    with pytest.raises(KeyError, match="frame7.png.*anomaly_mask"):
        heldout_log_likelihoods(_tiny_model(), _known_loader(), IGN, loader)
