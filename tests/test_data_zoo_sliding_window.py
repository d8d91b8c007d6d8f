"""Sliding-window inference: equivalence with whole-image inference, overlap counts, outputs."""

import pytest
import torch

from gmmseg.modeling.sliding_window import sliding_window_inference, sliding_window_positions

K = 4


def _pointwise_model():
    """A per-pixel (hence translation-equivariant) model: 1x1 convs and a nonlinearity."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.Tanh(), torch.nn.Conv2d(8, K, 1))
    return net.eval()


def test_positions_cover_the_image_and_end_at_the_border():
    boxes = sliding_window_positions(10, 13, window=4, stride=3)
    ys = sorted({(y0, y1) for y0, y1, _, _ in boxes})
    xs = sorted({(x0, x1) for _, _, x0, x1 in boxes})
    assert ys == [(0, 4), (3, 7), (6, 10)]
    assert xs == [(0, 4), (3, 7), (6, 10), (9, 13)]
    assert len(boxes) == 12
    # last window shifted back to end at the border (not beyond): 11 wide, window 4, stride 4
    assert sorted({(x0, x1) for _, _, x0, x1 in sliding_window_positions(4, 11, 4, 4)}) == [
        (0, 4),
        (4, 8),
        (7, 11),
    ]
    assert sliding_window_positions(3, 5, window=(8, 8), stride=(6, 6)) == [(0, 3, 0, 5)]
    with pytest.raises(ValueError, match="uncovered"):
        sliding_window_positions(10, 10, window=4, stride=5)


def test_counts_of_overlaps():
    image = torch.zeros(3, 10, 13)
    out = sliding_window_inference(
        lambda x: torch.zeros(x.shape[0], K, *x.shape[-2:]),
        image,
        window=4,
        stride=3,
        num_classes=K,
    )
    expected = torch.zeros(10, 13)
    for y0, y1, x0, x1 in sliding_window_positions(10, 13, 4, 3):
        expected[y0:y1, x0:x1] += 1
    assert torch.equal(out["count"], expected)
    assert out["count"].min() >= 1
    assert out["count"][0, 0] == 1 and out["count"][3, 3] == 4 and out["count"][5, 5] == 1
    assert out["count"].sum() == 12 * 16
    assert "anomaly" not in out


@pytest.mark.parametrize("windows_per_batch", [1, 5])
def test_equivariant_model_matches_whole_image(windows_per_batch):
    model = _pointwise_model()
    image = torch.randn(2, 3, 17, 23)

    def model_fn(crops):
        logits = model(crops)
        return logits, -logits.max(dim=1).values  # an anomaly-like score per pixel

    with torch.no_grad():
        whole = model(image)
    out = sliding_window_inference(
        model_fn,
        image,
        window=(8, 10),
        stride=(5, 6),
        num_classes=K,
        windows_per_batch=windows_per_batch,
    )
    assert out["logits"].shape == (2, K, 17, 23)
    assert torch.allclose(out["logits"], whole, atol=1e-6)
    assert torch.allclose(out["anomaly"], -whole.max(dim=1).values, atol=1e-6)


def test_position_dependent_model_is_averaged():
    """Each window returns its own index: the result is the mean index of the covering windows."""
    calls = []

    def model_fn(crops):
        calls.append(crops.shape)
        value = float(len(calls))
        return {
            "logits": torch.full((crops.shape[0], K, *crops.shape[-2:]), value),
            "anomaly": torch.stack(
                [
                    torch.full((crops.shape[0], *crops.shape[-2:]), -value),
                    torch.full((crops.shape[0], *crops.shape[-2:]), 2 * value),
                ],
                1,
            ),
        }

    out = sliding_window_inference(
        model_fn, torch.zeros(3, 6, 6), window=4, stride=2, num_classes=K
    )
    # windows (row-major): (0,4,0,4)=1, (0,4,2,6)=2, (2,6,0,4)=3, (2,6,2,6)=4
    assert out["logits"].shape == (1, K, 6, 6)
    assert out["logits"][0, 0, 0, 0] == 1 and out["logits"][0, 0, 0, 5] == 2
    assert out["logits"][0, 0, 3, 3] == pytest.approx(2.5)  # all four windows
    assert out["logits"][0, 0, 1, 3] == pytest.approx(1.5)  # windows 1 and 2
    # S = 2 score maps, each averaged like the logits
    assert out["anomaly"].shape == (1, 2, 6, 6)
    assert out["anomaly"][0, 0, 3, 3] == pytest.approx(-2.5) and out["anomaly"][
        0, 1, 1, 3
    ] == pytest.approx(3.0)
    assert all(s[-2:] == (4, 4) for s in calls)


def test_image_smaller_than_window_and_bad_outputs():
    model = _pointwise_model()
    image = torch.randn(3, 5, 7)
    out = sliding_window_inference(model, image, window=16, stride=8, num_classes=K)
    with torch.no_grad():
        assert torch.allclose(out["logits"], model(image[None]), atol=1e-6)
    assert (out["count"] == 1).all()
    with pytest.raises(ValueError, match="logits of shape"):
        sliding_window_inference(model, image, window=4, stride=2, num_classes=K + 1)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        sliding_window_inference(model, torch.zeros(5, 7), window=4, stride=2, num_classes=K)
