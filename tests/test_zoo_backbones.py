"""Backbones of the model zoo: the timm adapter (names, channels, strides, NHWC outputs, dilation,
weights from a local file), MiT-B0..B5 (table, shapes, checkpoint conversion) and the optimizer
builder. Small timm variants stand in for the big ones (same code paths); nothing is downloaded."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY

from gmmseg import add_gmmseg_config
from gmmseg.modeling.backbone import (
    MIT_SETTINGS,
    MixVisionTransformer,
    TimmBackbone,
    convert_mit_state_dict,
    feature_level_names,
    load_mit_checkpoint,
)
from gmmseg.solver import build_optimizer


def _check_pyramid(backbone, x, expected):
    """expected: {name: (channels, stride)}"""
    out = backbone(x)
    assert list(out) == list(expected)
    shapes = backbone.output_shape()
    for name, (c, s) in expected.items():
        assert (shapes[name].channels, shapes[name].stride) == (c, s)
        assert out[name].shape == (x.shape[0], c, x.shape[2] // s, x.shape[3] // s), name
    return out


def test_feature_level_names():
    assert feature_level_names([2, 4, 8, 16, 32]) == ["res1", "res2", "res3", "res4", "res5"]
    assert feature_level_names([4, 8, 16, 32]) == ["res2", "res3", "res4", "res5"]
    assert feature_level_names([2, 4, 8, 16, 16]) == ["res1", "res2", "res3", "res4", "res5"]
    assert feature_level_names([2, 4, 8, 8, 8]) == ["res1", "res2", "res3", "res4", "res5"]


def test_timm_resnet_default_drops_stride_2():
    bb = TimmBackbone("resnet18")
    _check_pyramid(
        bb,
        torch.randn(1, 3, 64, 64),
        {"res2": (64, 4), "res3": (128, 8), "res4": (256, 16), "res5": (512, 32)},
    )
    assert bb.size_divisibility == 32


def test_timm_dilated_resnet_keeps_level_names():
    bb = TimmBackbone("resnet18", out_indices=[1, 2, 3, 4], output_stride=8)
    _check_pyramid(
        bb,
        torch.randn(1, 3, 64, 64),
        {"res2": (64, 4), "res3": (128, 8), "res4": (256, 8), "res5": (512, 8)},
    )


def test_timm_swin_nhwc_any_size_and_output_norm():
    bb = TimmBackbone(
        "swin_tiny_patch4_window7_224",
        out_indices=[0, 1, 2, 3],
        output_norm=True,
        img_size=512,
        strict_img_size=False,
        drop_path_rate=0.2,
    )
    assert bb.channels_last
    x = torch.randn(2, 3, 64, 96)
    out = _check_pyramid(
        bb, x, {"res2": (96, 4), "res3": (192, 8), "res4": (384, 16), "res5": (768, 32)}
    )
    # a LayerNorm over channels per output (identity affine at init): zero mean over channels
    assert out["res3"].mean(1).abs().max() < 1e-4
    sum(v.sum() for v in out.values()).backward()
    assert bb.output_norms["res5"].weight.grad is not None


def test_timm_hrnet_raw_branches():
    bb = TimmBackbone("hrnet_w18_small", out_indices=[1, 2, 3, 4], feature_location="")
    _check_pyramid(
        bb,
        torch.randn(1, 3, 64, 64),
        {"res2": (16, 4), "res3": (32, 8), "res4": (64, 16), "res5": (128, 32)},
    )


@pytest.mark.parametrize(
    "name,channels", [("convnext_atto", (40, 80, 160, 320)), ("pvt_v2_b0", (32, 64, 160, 256))]
)
def test_timm_other_families(name, channels):
    bb = TimmBackbone(name)
    _check_pyramid(
        bb,
        torch.randn(1, 3, 64, 64),
        {f"res{i + 2}": (c, 2 ** (i + 2)) for i, c in enumerate(channels)},
    )


def test_timm_sync_bn_and_freeze():
    bb = TimmBackbone("resnet18", sync_bn=True)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in bb.modules())
    frozen = TimmBackbone("resnet18", freeze=True)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_timm_pretrained_file_is_loaded(tmp_path):
    src = TimmBackbone("resnet18")
    # a plain timm classification checkpoint, as a user downloads it
    import timm

    full = timm.create_model("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(full.state_dict(), path)
    bb = TimmBackbone("resnet18", pretrained_file=str(path))
    assert torch.equal(bb.body.conv1.weight, full.conv1.weight)
    assert not torch.equal(bb.body.conv1.weight, src.body.conv1.weight)
    with pytest.raises(FileNotFoundError, match="PRETRAINED_FILE"):
        TimmBackbone("resnet18", pretrained_file=str(tmp_path / "missing.pth"))


def test_build_timm_backbone_from_config():
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.MODEL.TIMM.NAME = "resnet18"
    cfg.MODEL.TIMM.OUT_INDICES = [2, 3, 4]
    cfg.MODEL.TIMM.KWARGS.output_stride = 16
    bb = BACKBONE_REGISTRY.get("build_timm_backbone")(cfg, ShapeSpec(channels=3))
    assert {k: (v.channels, v.stride) for k, v in bb.output_shape().items()} == {
        "res3": (128, 8),
        "res4": (256, 16),
        "res5": (512, 16),
    }


# ---- MiT ---------------------------------------------------------------------------------------
def test_mit_table():
    assert sorted(MIT_SETTINGS) == ["b0", "b1", "b2", "b3", "b4", "b5"]
    assert MIT_SETTINGS["b5"]["depths"] == (3, 6, 40, 3)
    assert MIT_SETTINGS["b0"]["embed_dims"] == (32, 64, 160, 256)


def test_mit_b0_shapes_and_params():
    m = MixVisionTransformer(**MIT_SETTINGS["b0"])
    _check_pyramid(
        m,
        torch.randn(2, 3, 64, 96),
        {"res2": (32, 4), "res3": (64, 8), "res4": (160, 16), "res5": (256, 32)},
    )
    # 3.3M parameters (encoder of SegFormer-B0, without the ImageNet classifier)
    assert abs(sum(p.numel() for p in m.parameters()) / 1e6 - 3.32) < 0.05


def test_mit_out_features_subset_builds_fewer_stages():
    m = MixVisionTransformer(**MIT_SETTINGS["b0"], out_features=["res2", "res3"])
    assert m.num_stages == 2 and not hasattr(m, "block3")
    assert list(m(torch.randn(1, 3, 32, 32))) == ["res2", "res3"]


def _to_hugging_face(state_dict, dims):
    """The inverse layout, written independently: release names -> HF SegformerModel names."""
    out = {}
    for key, v in state_dict.items():
        parts = key.split(".")
        if key.startswith("patch_embed"):
            i = int(parts[0][len("patch_embed") :]) - 1
            out[
                f"segformer.encoder.patch_embeddings.{i}.{'proj' if parts[1] == 'proj' else 'layer_norm'}.{parts[2]}"
            ] = v
        elif key.startswith("norm"):
            out[f"segformer.encoder.layer_norm.{int(parts[0][4:]) - 1}.{parts[1]}"] = v
        else:
            i, j, rest = int(parts[0][len("block") :]) - 1, parts[1], ".".join(parts[2:])
            prefix = f"segformer.encoder.block.{i}.{j}."
            if rest.startswith("attn.kv."):
                c = dims[i]
                out[prefix + "attention.self.key." + parts[-1]] = v[:c]
                out[prefix + "attention.self.value." + parts[-1]] = v[c:]
                continue
            for ours, hf in [
                ("norm1.", "layer_norm_1."),
                ("norm2.", "layer_norm_2."),
                ("attn.q.", "attention.self.query."),
                ("attn.sr.", "attention.self.sr."),
                ("attn.norm.", "attention.self.layer_norm."),
                ("attn.proj.", "attention.output.dense."),
                ("mlp.fc1.", "mlp.dense1."),
                ("mlp.fc2.", "mlp.dense2."),
            ]:
                if rest.startswith(ours):
                    rest = hf + rest[len(ours) :]
                    break
            out[prefix + rest] = v
    out["classifier.weight"] = torch.zeros(1000, dims[-1])
    return out


@pytest.mark.parametrize("layout", ["release", "segformer", "hugging_face"])
def test_mit_checkpoint_layouts(tmp_path, layout):
    src = MixVisionTransformer(**MIT_SETTINGS["b0"])
    sd = src.state_dict()
    if layout == "release":
        ckpt = {**sd, "head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}
    elif layout == "segformer":
        ckpt = {
            "state_dict": {
                **{"backbone." + k: v for k, v in sd.items()},
                "decode_head.linear_fuse.conv.weight": torch.zeros(1),
            }
        }
    else:
        ckpt = _to_hugging_face(sd, MIT_SETTINGS["b0"]["embed_dims"])
    assert convert_mit_state_dict(ckpt).keys() >= sd.keys()
    path = tmp_path / "mit.pth"
    torch.save(ckpt, path)
    dst = MixVisionTransformer(**MIT_SETTINGS["b0"])
    load_mit_checkpoint(dst, str(path))
    for k, v in dst.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_mit_checkpoint_of_wrong_variant_is_an_error(tmp_path):
    path = tmp_path / "b1.pth"
    torch.save(MixVisionTransformer(**MIT_SETTINGS["b1"]).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit"):
        load_mit_checkpoint(MixVisionTransformer(**MIT_SETTINGS["b0"]), str(path))


# ---- optimizer ---------------------------------------------------------------------------------
class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        self.backbone.relative_position_bias_table = torch.nn.Parameter(torch.zeros(5))
        self.head = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))


def _groups(opt):
    out = {}
    for g in opt.param_groups:
        for p in g["params"]:
            out[id(p)] = (g["lr"], g["weight_decay"])
    return out


def test_build_optimizer_adamw_rules():
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = 6e-4, 0.01
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    m = _Tiny()
    opt = build_optimizer(cfg, m)
    assert isinstance(opt, torch.optim.AdamW)
    g = _groups(opt)
    assert g[id(m.backbone[0].weight)] == pytest.approx((6e-5, 0.01))
    assert g[id(m.backbone[1].weight)] == pytest.approx((6e-5, 0.0))  # norm: WEIGHT_DECAY_NORM
    assert g[id(m.backbone.relative_position_bias_table)] == pytest.approx((6e-5, 0.0))  # embed
    assert g[id(m.head[0].weight)] == pytest.approx((6e-4, 0.01))
    assert g[id(m.head[1].bias)] == pytest.approx((6e-4, 0.0))


def test_build_optimizer_sgd_and_unknown():
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_NORM = 0.01, 4e-4, 4e-4
    m = _Tiny()
    opt = build_optimizer(cfg, m)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    assert _groups(opt)[id(m.backbone[1].weight)] == pytest.approx((0.01, 4e-4))
    cfg.SOLVER.OPTIMIZER = "LAMB"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(cfg, m)


def test_build_optimizer_embedding_decay_and_full_model_clipping():
    """Mask2Former's recipe: nn.Embedding weights (queries) get WEIGHT_DECAY_EMBED, and CLIP_TYPE
    "full_model" clips the global norm over all parameters before each step."""
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_EMBED = 1e-3, 0.05, 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    m = torch.nn.ModuleDict({"query_feat": torch.nn.Embedding(4, 3), "proj": torch.nn.Linear(3, 3)})
    opt = build_optimizer(cfg, m)
    g = _groups(opt)
    assert g[id(m["query_feat"].weight)] == pytest.approx((1e-3, 0.0))
    assert g[id(m["proj"].weight)] == pytest.approx((1e-3, 0.05))
    assert not hasattr(m["query_feat"].weight, "_gmmseg_embedding")  # the marker is removed
    for p in m.parameters():
        p.grad = torch.full_like(p, 10.0)
    opt.step()
    total = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in m.parameters()]))
    assert total.item() == pytest.approx(0.01, rel=1e-4)
