"""The per-pixel model built from a config: training losses, inference outputs, sliding window,
registry errors that list what is registered."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from gmmseg import add_gmmseg_config


def _cfg(predictor="gmm", **overrides):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file("configs/demo/fpn_r18_gmm.yaml")
    cfg.MODEL.PREDICTOR.NAME = predictor
    cfg.MODEL.GMM.MEMORY_SIZE = 50
    for k, v in overrides.items():
        cfg.merge_from_list([k, v])
    return cfg


def _batch(n=2, h=64, w=96):
    return [{"image": torch.randint(0, 255, (3, h, w)).float(), "sem_seg": torch.randint(0, 6, (h, w)),
             "height": h, "width": w} for _ in range(n)]


@pytest.mark.parametrize("predictor", ["gmm", "softmax"])
def test_train_losses_and_inference_outputs(predictor):
    model = build_model(_cfg(predictor))
    losses = model(_batch())
    expected = {"loss_sem_seg"} | ({"loss_gmm_aux"} if predictor == "gmm" else set())
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model(_batch(1, 50, 70))[0]
    assert out["sem_seg"].shape == (6, 50, 70)
    assert ("anomaly_score" in out) == (predictor == "gmm")
    if predictor == "gmm":
        assert out["anomaly_score"].shape == (50, 70)


@pytest.mark.parametrize("predictor", ["gmm", "softmax"])
def test_all_void_batch_gives_finite_zero_loss_and_zero_gradients(predictor):
    model = build_model(_cfg(predictor))
    batch = _batch()
    for d in batch:
        d["sem_seg"][:] = 255
    losses = model(batch)
    assert losses["loss_sem_seg"].item() == 0.0
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_sliding_window_matches_whole_image_shape_and_is_close():
    model = build_model(_cfg()).eval()
    slide = build_model(_cfg(**{"TEST.SLIDING_WINDOW.ENABLED": "True", "TEST.SLIDING_WINDOW.SIZE": "(64, 64)",
                                "TEST.SLIDING_WINDOW.STRIDE": "(32, 32)"})).eval()
    slide.load_state_dict(model.state_dict())
    batch = _batch(1, 64, 128)
    with torch.no_grad():
        a, b = model(batch)[0], slide(batch)[0]
    assert a["sem_seg"].shape == b["sem_seg"].shape and b["anomaly_score"].shape == (64, 128)
    # a window equal to the image is the whole-image inference
    one = build_model(_cfg(**{"TEST.SLIDING_WINDOW.ENABLED": "True", "TEST.SLIDING_WINDOW.SIZE": "(64, 128)",
                              "TEST.SLIDING_WINDOW.STRIDE": "(64, 128)"})).eval()
    one.load_state_dict(model.state_dict())
    with torch.no_grad():
        c = one(batch)[0]
    assert torch.allclose(a["sem_seg"], c["sem_seg"], atol=1e-4)


@pytest.mark.parametrize("key,value,listed", [
    ("MODEL.PREDICTOR.NAME", "nope", "softmax"),
    ("MODEL.SEM_SEG_HEAD.DECODER", "nope", "FPNDecoder"),
])
def test_unknown_component_lists_registered(key, value, listed):
    with pytest.raises(KeyError, match=listed):
        build_model(_cfg(**{key: value}))
