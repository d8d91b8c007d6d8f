"""Hungarian matcher (vs brute force) and the set criterion of Mask2Former."""

import itertools

import pytest
import torch

from gmmseg.modeling.mask_former import HungarianMatcher, SetCriterion

W_CLASS, W_MASK, W_DICE = 2.0, 5.0, 5.0


def _reference_cost(logits, masks, labels, tgt_masks):
    """Costs written out pair by pair, straight from their definitions."""
    q, t = logits.shape[0], labels.shape[0]
    cost = torch.zeros(q, t, dtype=torch.float64)
    for i in range(q):
        p = torch.softmax(logits[i].double(), -1)
        m = torch.sigmoid(masks[i].double()).flatten()
        for j in range(t):
            g = tgt_masks[j].double().flatten()
            bce = -(g * m.log() + (1 - g) * (1 - m).log()).mean()
            dice = 1 - (2 * (m * g).sum() + 1) / (m.sum() + g.sum() + 1)
            cost[i, j] = W_CLASS * -p[labels[j]] + W_MASK * bce + W_DICE * dice
    return cost


def _brute_force(cost):
    """Minimum total cost over all injective assignments of the smaller side."""
    q, t = cost.shape
    if t <= q:
        return min(
            sum(float(cost[rows[j], j]) for j in range(t))
            for rows in itertools.permutations(range(q), t)
        )
    return min(
        sum(float(cost[i, cols[i]]) for i in range(q))
        for cols in itertools.permutations(range(t), q)
    )


def _case(seed, q, t, k=4, size=(6, 5)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, q, k + 1, generator=g) * 2
    masks = torch.randn(1, q, *size, generator=g) * 3
    labels = torch.randint(0, k, (t,), generator=g)
    tgt = torch.rand(t, *size, generator=g) > 0.5
    return {"pred_logits": logits, "pred_masks": masks}, [{"labels": labels, "masks": tgt}]


@pytest.mark.parametrize(
    "seed,q,t", [(0, 4, 3), (1, 5, 5), (2, 6, 2), (3, 5, 1), (4, 3, 5), (5, 6, 4), (6, 4, 0)]
)
def test_matcher_equals_brute_force(seed, q, t):
    outputs, targets = _case(seed, q, t)
    matcher = HungarianMatcher(W_CLASS, W_MASK, W_DICE, num_points=0)  # every pixel: exact costs
    ((rows, cols),) = matcher(outputs, targets)
    assert len(rows) == len(cols) == min(q, t)
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    if t == 0:
        return
    cost = _reference_cost(
        outputs["pred_logits"][0],
        outputs["pred_masks"][0],
        targets[0]["labels"],
        targets[0]["masks"],
    )
    dense = matcher.cost_matrix(
        outputs["pred_logits"][0],
        outputs["pred_masks"][0],
        targets[0]["labels"],
        targets[0]["masks"],
    )
    assert torch.allclose(dense.double(), cost, atol=1e-4)
    total = float(cost[rows, cols].sum())
    assert total == pytest.approx(_brute_force(cost), abs=1e-4)


def test_point_sampled_costs_at_pixel_centres_equal_dense_costs():
    outputs, targets = _case(7, 5, 3, size=(4, 6))
    matcher = HungarianMatcher(W_CLASS, W_MASK, W_DICE, num_points=0)
    h, w = 4, 6
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    centres = torch.stack([xs.flatten(), ys.flatten()], -1)[None]  # (1, h w, 2) as (x, y)
    args = (
        outputs["pred_logits"][0],
        outputs["pred_masks"][0],
        targets[0]["labels"],
        targets[0]["masks"],
    )
    assert torch.allclose(
        matcher.cost_matrix(*args, point_coords=centres), matcher.cost_matrix(*args), atol=1e-5
    )


def test_point_sampled_matching_finds_the_obvious_assignment():
    # 3 targets, 5 queries: queries 4, 0, 2 predict targets 0, 1, 2 exactly (mask and class)
    k, size = 3, (16, 16)
    tgt = torch.zeros(3, *size, dtype=torch.bool)
    tgt[0, :8], tgt[1, 8:, :8], tgt[2, 8:, 8:] = True, True, True
    labels = torch.tensor([2, 0, 1])
    masks = torch.full((1, 5, *size), -8.0)
    logits = torch.zeros(1, 5, k + 1)
    for q, j in [(4, 0), (0, 1), (2, 2)]:
        masks[0, q][tgt[j]] = 8.0
        logits[0, q, labels[j]] = 6.0
    matcher = HungarianMatcher(W_CLASS, W_MASK, W_DICE, num_points=64)
    ((rows, cols),) = matcher(
        {"pred_logits": logits, "pred_masks": masks}, [{"labels": labels, "masks": tgt}]
    )
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 4, 1: 0, 2: 2}


def _criterion(k=4, deep=True):
    matcher = HungarianMatcher(W_CLASS, W_MASK, W_DICE, num_points=32)
    weights = {"loss_ce": W_CLASS, "loss_mask": W_MASK, "loss_dice": W_DICE}
    if deep:
        weights.update({f"{n}_{i}": w for n, w in list(weights.items()) for i in range(2)})
    return SetCriterion(k, matcher, weights, eos_coef=0.1, num_points=32)


def test_criterion_losses_finite_with_deep_supervision_and_empty_images():
    g = torch.Generator().manual_seed(0)
    b, q, k = 2, 5, 4

    def pred():
        return {
            "pred_logits": torch.randn(b, q, k + 1, generator=g).requires_grad_(),
            "pred_masks": torch.randn(b, q, 8, 8, generator=g).requires_grad_(),
        }

    outputs = pred()
    outputs["aux_outputs"] = [pred(), pred()]
    targets = [
        {"labels": torch.tensor([1, 3]), "masks": torch.rand(2, 32, 32, generator=g) > 0.5},
        {
            "labels": torch.zeros(0, dtype=torch.long),
            "masks": torch.zeros(0, 32, 32, dtype=torch.bool),
        },
    ]
    crit = _criterion(k)
    losses, indices = crit(outputs, targets)
    assert set(losses) == {f"loss_{n}{s}" for n in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    assert all(torch.isfinite(v) for v in losses.values())
    assert [len(i[0]) for i in indices] == [2, 0]
    assert set(_criterion(k, deep=False)(outputs, targets)[0]) == {
        "loss_ce",
        "loss_mask",
        "loss_dice",
    }
    sum(losses.values()).backward()
    assert torch.isfinite(outputs["pred_masks"].grad).all()
    # query labels: matched -> class, others -> no object (k)
    labels = SetCriterion.query_targets(indices, targets, q, k, "cpu")
    assert sorted(labels[0][labels[0] != k].tolist()) == [1, 3] and (labels[1] == k).all()
    # no segment at all: the mask losses are zero, the class loss pushes everything to "no object"
    none = [targets[1], targets[1]]
    losses, _ = crit({k2: v for k2, v in pred().items()}, none)
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice"].item() == 0.0
    assert torch.isfinite(losses["loss_ce"])


def test_no_object_weight_in_class_loss():
    crit = _criterion(k=2)
    assert crit.empty_weight.tolist() == pytest.approx([1.0, 1.0, 0.1])
    # all queries unmatched and predicting "no object" perfectly: ~zero class loss
    logits = torch.tensor([[[-9.0, -9.0, 9.0]] * 3])
    out = crit.loss_labels(
        {"pred_logits": logits},
        [{"labels": torch.zeros(0, dtype=torch.long)}],
        [(torch.zeros(0, dtype=torch.long),) * 2],
        1.0,
    )
    assert float(out["loss_ce"]) < 1e-6
