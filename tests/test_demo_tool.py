"""tools/demo.py on randomly initialised demo models and two generated images."""

import importlib.util
import os

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_demo():
    spec = importlib.util.spec_from_file_location(
        "gmmseg_tools_demo", os.path.join(ROOT, "tools", "demo.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_writes_one_png_per_image(tmp_path):
    demo = _load_demo()
    inputs = tmp_path / "in"
    inputs.mkdir()
    sizes = [(96, 128), (80, 120)]
    for i, (h, w) in enumerate(sizes):
        rgb = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(inputs / f"img{i}.png")
    (inputs / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    args = demo.get_parser().parse_args(
        [
            "--config-file",
            os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml"),
            "--input",
            str(inputs),
            "--output",
            str(out),
            "--opts",
            "MODEL.WEIGHTS",
            "",
            "MODEL.DEVICE",
            "cpu",
        ]
    )
    written = demo.main(args)
    assert [os.path.basename(p) for p in written] == ["img0.png", "img1.png"]
    for path, (h, w) in zip(written, sizes):
        with Image.open(path) as im:
            assert (im.size[1], im.size[0]) == demo.figure_size_px(h, w)
            assert np.asarray(im.convert("L")).std() > 10  # not blank


def test_softmax_model_panel_and_generic_class_names(tmp_path):
    """A model without "anomaly_score" gets the -max logit map; no metadata -> generic names."""
    from detectron2.config import get_cfg

    demo = _load_demo()
    logits = torch.randn(3, 40, 60)
    maps = demo.maps_from_predictions({"sem_seg": logits})
    assert maps["is_gmm"] is False
    assert (
        maps["anomaly_label"] == "max logit: -max_c logit"
    )  # the score table's label of the map shown
    np.testing.assert_allclose(maps["anomaly"], -logits.amax(0).numpy())
    np.testing.assert_allclose(
        maps["confidence"], torch.softmax(logits, 0).amax(0).numpy(), rtol=1e-6
    )
    cfg = get_cfg()
    cfg.DATASETS.TEST = ()
    meta = demo.class_metadata(cfg, 3)
    assert meta.stuff_classes == ["class 0", "class 1", "class 2"]
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    path = demo.render(image, maps, meta, str(tmp_path / "x.png"), title="x")
    with Image.open(path) as im:
        assert (im.size[1], im.size[0]) == demo.figure_size_px(40, 60)


def test_the_heat_map_is_titled_with_the_score_table_label_of_the_models_map():
    """The map's name is the entry of "anomaly_scores" that is (or equals) "anomaly_score": a GMM's
    default, or the score MODEL.ANOMALY_SCORE names; an exported model's output names none."""
    demo = _load_demo()
    logits = torch.randn(3, 4, 5)
    likelihood, energy = torch.randn(4, 5), -torch.logsumexp(logits, 0)
    named = {"likelihood": likelihood, "energy": energy, "msp": torch.randn(4, 5)}
    pred = {"sem_seg": logits, "anomaly_scores": named, "anomaly_score": likelihood}
    assert demo.maps_from_predictions(pred)["anomaly_label"] == "GMM: -max_c log p(x|c)"
    pred["anomaly_score"] = energy.clone()  # equal values, another tensor
    maps = demo.maps_from_predictions(pred)
    assert maps["anomaly_label"] == "energy: -logsumexp_c logit" and maps["is_gmm"] is True
    np.testing.assert_allclose(maps["anomaly"], energy.numpy())
    exported = demo.maps_from_predictions({"sem_seg": logits, "anomaly_score": energy})
    assert exported["anomaly_label"] == "the exported model's anomaly map"


def test_expand_inputs(tmp_path):
    demo = _load_demo()
    for name in ("a.png", "b.jpg", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert demo.expand_inputs([str(tmp_path)]) == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    assert demo.expand_inputs([str(tmp_path / "*.jpg"), str(tmp_path / "b.jpg")]) == [
        str(tmp_path / "b.jpg")
    ]
    with pytest.raises(FileNotFoundError):
        demo.expand_inputs([str(tmp_path / "missing.png")])
    with pytest.raises(FileNotFoundError, match="matched no image"):
        demo.expand_inputs([str(tmp_path / "*.bmp")])


def test_demo_reads_the_class_names_of_a_folder_dataset(tmp_path):
    """configs/user_data: NUM_CLASSES 0 and the class names come from DATASETS.FOLDER, as in training."""
    demo = _load_demo()
    (tmp_path / "classes.txt").write_text("sky\nroad\n")
    args = demo.get_parser().parse_args(
        [
            "--config-file",
            os.path.join(ROOT, "configs", "user_data", "fpn_r50_gmm.yaml"),
            "--input",
            "x",
            "--output",
            "y",
            "--opts",
            "DATASETS.FOLDER.ROOT",
            str(tmp_path),
            "MODEL.DEVICE",
            "cpu",
        ]
    )
    cfg = demo.setup_cfg(args)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 2
    assert demo.class_metadata(cfg, 2).stuff_classes == ["sky", "road"]
