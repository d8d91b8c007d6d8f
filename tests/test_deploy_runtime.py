"""Running an exported file alone: the runtime's pre- and post-processing are DefaultPredictor's,
and tools/deploy/export_model.py + tools/demo.py --exported give the three-panel picture of the
checkpoint's model without its config."""

import importlib.util
import os

import numpy as np
import pytest
import torch
from _deploy_helpers import CONFIGS, ROOT, demo_cfg, trained_like
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from PIL import Image

from gmmseg.checkpoint import GMMSegCheckpointer
from gmmseg.data.demo import render_scene
from gmmseg.deploy import ExportedSegmenter
from gmmseg.deploy.runtime import preprocess, resize_outputs, resized_shape


def _load_tool(*parts):
    spec = importlib.util.spec_from_file_location(
        "gmmseg_tool_" + parts[-1][:-3], os.path.join(ROOT, *parts)
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scene(height, width, seed=0):
    """A demo scene (BGR uint8) at height x width."""
    rgb = render_scene(np.random.default_rng(seed), with_anomalies=True)["image"]
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))[
        :, :, ::-1
    ].copy()


@pytest.mark.parametrize(
    "hw,short,max_size",
    [
        ((300, 400), 96, 1000),
        ((400, 300), 96, 1000),
        ((97, 1000), 96, 500),
        ((360, 480), 512, 2048),
        ((360, 480), 0, 1000),
        ((361, 481), 360, 480),
    ],
)
def test_preprocess_is_default_predictors(hw, short, max_size):
    image = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    aug = T.ResizeShortestEdge([short, short], max_size)
    if short:
        assert resized_shape(*hw, short, max_size) == T.ResizeShortestEdge.get_output_shape(
            *hw, short, max_size
        )
    for fmt in ("RGB", "BGR"):
        src = image[:, :, ::-1] if fmt == "RGB" else image
        expected = aug.get_transform(src).apply_image(src).astype("float32").transpose(2, 0, 1)
        np.testing.assert_array_equal(preprocess(image, fmt, short, max_size), expected)


@pytest.mark.parametrize("size", [(360, 480), (50, 70), (96, 128)])
def test_output_resize_is_sem_seg_postprocess(size):
    """Same to 1e-3 on values of std 10 with neighbours 14 apart on average: torch computes the
    sample positions in float32, the runtime in float64."""
    scores = torch.randn(7, 96, 128) * 10
    expected = sem_seg_postprocess(scores, (96, 128), *size).numpy()
    out = resize_outputs({"sem_seg": scores.numpy(), "anomaly_score": scores[0].numpy()}, *size)
    np.testing.assert_allclose(out["sem_seg"], expected, rtol=0, atol=1e-3)
    np.testing.assert_allclose(out["anomaly_score"], expected[0], rtol=0, atol=1e-3)


def test_export_cli_then_demo_from_the_exported_file_alone(tmp_path):
    cfg = demo_cfg("gmm")
    torch.manual_seed(0)
    predictor = DefaultPredictor(cfg)
    trained_like(predictor.model)
    GMMSegCheckpointer(predictor.model, save_dir=str(tmp_path)).save("model_trained")
    weights = str(tmp_path / "model_trained.pth")

    export = _load_tool("tools", "deploy", "export_model.py")
    args = export.get_parser().parse_args(
        [
            "--config-file",
            os.path.join(ROOT, CONFIGS["gmm"]),
            "--format",
            "onnx",
            "--export-method",
            "tracing",
            "--output",
            str(tmp_path / "export"),
            "MODEL.WEIGHTS",
            weights,
        ]
    )
    path = export.main(args)
    assert path == str(tmp_path / "export" / "model.onnx")

    # the runtime on a 300 x 400 image (resized to 96 x 128 and back, as DefaultPredictor does)
    image = _scene(300, 400)
    ref = predictor(image)
    out = ExportedSegmenter(path)(image)
    assert out["sem_seg"].shape == (6, 300, 400) and out["anomaly_score"].shape == (300, 400)
    agreement = (out["sem_seg"].argmax(0) == ref["sem_seg"].argmax(0).numpy()).mean()
    assert agreement >= 0.999
    np.testing.assert_allclose(
        out["anomaly_score"], ref["anomaly_score"].numpy(), rtol=0, atol=1e-3
    )

    demo = _load_tool("tools", "demo.py")
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(image[:, :, ::-1]).save(inputs / "scene.png")
    written = demo.main(
        demo.get_parser().parse_args(
            ["--exported", path, "--input", str(inputs), "--output", str(tmp_path / "vis")]
        )
    )
    assert [os.path.basename(p) for p in written] == ["scene.png"]
    with Image.open(written[0]) as im:
        assert (im.size[1], im.size[0]) == demo.figure_size_px(300, 400)
        assert np.asarray(im.convert("L")).std() > 10
    with pytest.raises(SystemExit, match="either --config-file"):
        demo.main(
            demo.get_parser().parse_args(["--input", str(inputs), "--output", str(tmp_path / "x")])
        )


def test_runtime_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        ExportedSegmenter(str(tmp_path / "missing.onnx"))
    other = tmp_path / "model.bin"
    other.write_bytes(b"0")
    with pytest.raises(ValueError, match="model.bin: expected an .onnx"):
        ExportedSegmenter(str(other))
    with pytest.raises(ValueError, match="uint8 BGR"):
        preprocess(np.zeros((4, 4, 3), np.float32), "RGB", 0, 100)
