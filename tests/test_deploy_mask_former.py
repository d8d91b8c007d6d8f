"""Mask2Former GMM export: TorchScript and ONNX Runtime equal the eager model at the traced input
size (class scores and the query-likelihood anomaly map), other sizes are refused by name, and
the files hold no memory bank and no set criterion."""

import os

import numpy as np
import pytest
import torch
from _deploy_helpers import ROOT, image_of, trained_like
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from gmmseg import add_gmmseg_config
from gmmseg.deploy import ExportedSegmenter, export_metadata, export_model, prepare_for_export

SIZE = (96, 128)  # the demo's test size


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, "configs/demo/mask2former_r18_gmm.yaml"))
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = trained_like(build_model(cfg))
    with torch.no_grad():
        ref = {
            k: v.numpy()
            for k, v in model([{"image": torch.from_numpy(image_of(SIZE))}])[0].items()
            if k != "anomaly_scores"
        }  # the file returns the anomaly map, not every score
    sizes = prepare_for_export(model)
    out = tmp_path_factory.mktemp("export_m2f")
    files = {
        fmt: export_model(
            model,
            torch.from_numpy(image_of(SIZE)),
            fmt,
            str(out / f"model.{ext}"),
            export_metadata(cfg, 6),
        )
        for fmt, ext in (("torchscript", "ts"), ("onnx", "onnx"))
    }
    return ref, files, sizes


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_mask_former_export_matches_eager_at_its_size(exported, fmt):
    ref, files, _ = exported
    seg = ExportedSegmenter(files[fmt])
    assert seg.metadata["input_size"] == list(SIZE)
    out = seg.run(image_of(SIZE))
    assert sorted(out) == ["anomaly_score", "sem_seg"]
    diffs = {k: float(np.abs(out[k] - ref[k]).max()) for k in ref}
    print(f"Mask2Former GMM {fmt} {SIZE}: max |diff| {diffs}")
    assert diffs["sem_seg"] <= 1e-4 and diffs["anomaly_score"] <= 1e-3, diffs
    assert (out["sem_seg"].argmax(0) == ref["sem_seg"].argmax(0)).mean() >= 0.999
    with pytest.raises(ValueError, match="exported for inputs of 96x128 only.*--sample-size"):
        seg.run(image_of((128, 160)))


def test_mask_former_files_hold_no_training_state(exported):
    _, files, sizes = exported
    assert sizes["after"] < sizes["before"]
    ts = torch.jit.load(files["torchscript"])
    assert not [k for k in ts.state_dict() if "memory" in k or "criterion" in k]
    assert all(os.path.getsize(p) < sizes["after"] + 2**20 for p in files.values())
