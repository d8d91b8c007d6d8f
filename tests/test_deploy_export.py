"""Export of the per-pixel demo models (GMM and softmax twin): eager vs TorchScript vs ONNX
Runtime at a real image size, at a second size (the height and width are dynamic), and the
exported files without the GMM's memory bank.

The models are the demo configs with every floating tensor moved away from its initial value
and the GMM given trained-like stds (0.05..0.5), so that the class scores are spread as after
training. Measured here (360 x 480): TorchScript = eager bitwise for the softmax twin, max
|difference| 9e-6 / 1.8e-5 on the GMM's class scores / anomaly map (its export form folds the
projection's batch norm and stacks its two products: float rounding on values of tens of nats);
ONNX Runtime max |difference| ~1e-4 on both, same argmax on >= 99.999 % of the pixels.
"""

import os

import numpy as np
import onnx
import pytest
import torch
from _deploy_helpers import demo_cfg, image_of, trained_like
from detectron2.modeling import build_model

from gmmseg.deploy import (
    ExportedSegmenter,
    GMMClassifier,
    export_metadata,
    export_model,
    prepare_for_export,
)
from gmmseg.deploy.adaptive_pool import MatrixAdaptiveAvgPool2d
from gmmseg.deploy.prepare import state_bytes
from gmmseg.gmm import GMMPredictor

SIZE, OTHER_SIZE = (360, 480), (250, 330)  # the second one is not a multiple of the backbone's 32
MAX_ABS_DIFF = 1e-3  # class scores and anomaly map, ONNX Runtime vs eager
# TorchScript vs eager, GMM: the export form folds the projection's batch norm and stacks the two
# products (gmmseg/deploy/gmm_classifier.py): float rounding, measured <= 1.8e-5 on values of tens of nats
TORCHSCRIPT_GMM_MAX_ABS_DIFF = 5e-5
MIN_ARGMAX_AGREEMENT = 0.999


def eager(model, image):
    """The eager model's outputs that the exported file returns (its map, not every score)."""
    with torch.no_grad():
        out = model([{"image": torch.from_numpy(image)}])[0]
    return {k: v.numpy() for k, v in out.items() if k != "anomaly_scores"}


@pytest.fixture(scope="module", params=["gmm", "softmax"])
def exported(request, tmp_path_factory):
    """variant -> reference outputs of the untouched eager model at both sizes, state bytes,
    and the .ts and .onnx files exported from it."""
    variant = request.param
    cfg = demo_cfg(variant)
    torch.manual_seed(0)
    model = trained_like(build_model(cfg))
    ref = {size: eager(model, image_of(size)) for size in (SIZE, OTHER_SIZE)}
    bank = sum(b.numel() * b.element_size() for n, b in model.named_buffers() if ".memory." in n)
    sizes = prepare_for_export(model)
    out = tmp_path_factory.mktemp(f"export_{variant}")
    meta = export_metadata(cfg, 6)
    files = {
        fmt: export_model(
            model, torch.from_numpy(image_of(SIZE)), fmt, str(out / f"model.{ext}"), meta
        )
        for fmt, ext in (("torchscript", "ts"), ("onnx", "onnx"))
    }
    return {"variant": variant, "ref": ref, "files": files, "sizes": sizes, "bank": bank}


@pytest.mark.parametrize("size", [SIZE, OTHER_SIZE], ids=["360x480", "250x330"])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_model_matches_eager(exported, fmt, size):
    ref = exported["ref"][size]
    out = ExportedSegmenter(exported["files"][fmt]).run(image_of(size))
    expected = ["anomaly_score", "sem_seg"] if exported["variant"] == "gmm" else ["sem_seg"]
    assert sorted(out) == expected == sorted(ref)
    assert out["sem_seg"].shape == (6, *size)
    diffs = {k: float(np.abs(out[k] - ref[k]).max()) for k in ref}
    agreement = float((out["sem_seg"].argmax(0) == ref["sem_seg"].argmax(0)).mean())
    print(
        f"{exported['variant']} {fmt} {size}: max |diff| {diffs}, argmax agreement {agreement:.5f}"
    )
    assert agreement >= MIN_ARGMAX_AGREEMENT
    assert all(d <= MAX_ABS_DIFF for d in diffs.values()), diffs
    if (
        fmt == "torchscript"
    ):  # eager's kernels; the GMM's export form rounds differently (folded BN, one product)
        limit = 1e-5 if exported["variant"] == "softmax" else TORCHSCRIPT_GMM_MAX_ABS_DIFF
        assert all(d <= limit for d in diffs.values()), diffs
    if "anomaly_score" in ref:
        assert out["anomaly_score"].shape == size
        assert (
            np.corrcoef(out["anomaly_score"].ravel(), ref["anomaly_score"].ravel())[0, 1] > 0.99999
        )


def test_exported_files_hold_no_memory_bank(exported):
    before, after = exported["sizes"]["before"], exported["sizes"]["after"]
    if exported["variant"] == "gmm":
        assert exported["bank"] > 0 and before - after >= exported["bank"]
    else:
        assert before == after
    ts = torch.jit.load(exported["files"]["torchscript"])
    assert not [k for k in ts.state_dict() if "memory" in k or "bank" in k or "stat_" in k]
    assert (
        state_bytes(ts) <= after + 1024
    )  # + pixel mean and std, non-persistent in the eager model
    proto = onnx.load(exported["files"]["onnx"])
    init_bytes = sum(np.prod(t.dims) * 4 for t in proto.graph.initializer)
    assert init_bytes <= after
    for fmt, path in exported["files"].items():
        size = os.path.getsize(path)
        print(
            f"{exported['variant']} {fmt}: {size / 2**20:.1f} MiB; model state {before / 2**20:.1f} MiB, "
            f"{after / 2**20:.1f} MiB without training-only tensors (bank {exported['bank'] / 2**20:.1f} MiB)"
        )
        assert size < after + 2**20


def test_metadata_names_the_outputs_and_the_input(exported):
    for path in exported["files"].values():
        seg = ExportedSegmenter(path)
        assert seg.has_anomaly == (exported["variant"] == "gmm")
        assert seg.metadata["input_format"] == "RGB"
        assert (seg.metadata["min_size_test"], seg.metadata["max_size_test"]) == (96, 1000)
        assert seg.metadata["class_names"][:2] == ["sky", "road"]
    names = [o.name for o in onnx.load(exported["files"]["onnx"]).graph.output]
    assert names == ExportedSegmenter(exported["files"]["onnx"]).outputs


def test_gmm_classifier_is_the_predictor_without_training_state():
    torch.manual_seed(0)
    pred = GMMPredictor(16, 4, embed_dim=8, num_components=3, memory_size=50).eval()
    with torch.no_grad():
        pred.stds.copy_(0.05 + 0.4 * torch.rand(pred.stds.shape))
    clf = GMMClassifier.from_predictor(pred)
    assert not [n for n, _ in clf.named_buffers() if "memory" in n]
    buffers = dict(clf.named_buffers())
    assert buffers["weights"].shape == (2 * 8, 4 * 3) and buffers["bias"].shape == (4 * 3,)
    x = torch.randn(500, 16)
    with torch.no_grad():
        a, b = pred(x), clf(x)
    torch.testing.assert_close(b["log_likelihood"], a["log_likelihood"], rtol=0, atol=1e-4)
    torch.testing.assert_close(b["logits"], a["logits"], rtol=0, atol=1e-4)
    with pytest.raises(RuntimeError, match="inference-only"):
        clf(x, torch.zeros(500, dtype=torch.long))


def test_prepare_names_what_it_cannot_export():
    model = build_model(demo_cfg("gmm", "TEST.SLIDING_WINDOW.ENABLED", "True"))
    with pytest.raises(ValueError, match="TEST.SLIDING_WINDOW.ENABLED False"):
        prepare_for_export(model)
    model = build_model(demo_cfg("gmm", "MODEL.PREDICTOR.NAME", "protoseg"))
    with pytest.raises(ValueError, match="MODEL.PREDICTOR.NAME.*ProtoSegPredictor"):
        prepare_for_export(model)


def test_prepare_drops_the_auxiliary_head():
    model = build_model(demo_cfg("softmax", "MODEL.SEM_SEG_HEAD.AUX_HEAD.IN_FEATURE", "p4"))
    assert model.sem_seg_head.aux_head is not None
    sizes = prepare_for_export(model)
    assert model.sem_seg_head.aux_head is None and sizes["after"] < sizes["before"]


@pytest.mark.parametrize("out_size", [2, 3, 6, (2, 5)])
def test_matrix_adaptive_pool_is_torchs(out_size):
    for hw in ((8, 10), (7, 11), (3, 5)):
        x = torch.randn(2, 4, *hw)
        torch.testing.assert_close(
            MatrixAdaptiveAvgPool2d(out_size)(x),
            torch.nn.AdaptiveAvgPool2d(out_size)(x),
            rtol=0,
            atol=1e-5,
        )


def test_upernet_pyramid_pooling_exports_with_a_dynamic_size(tmp_path):
    """torch's ONNX exporter rejects adaptive_avg_pool2d of an unknown input size; prepare_for_export
    swaps UPerNet's pools for MatrixAdaptiveAvgPool2d."""
    cfg = demo_cfg(
        "gmm", "MODEL.SEM_SEG_HEAD.DECODER", "UPerNetDecoder", "MODEL.SEM_SEG_HEAD.NORM", "BN"
    )
    torch.manual_seed(0)
    model = trained_like(build_model(cfg))
    sizes = [(160, 224), (130, 250)]
    ref = {s: eager(model, image_of(s)) for s in sizes}
    prepare_for_export(model)
    assert [
        m.output_size for m in model.modules() if isinstance(m, torch.nn.AdaptiveAvgPool2d)
    ] == [1]
    path = export_model(
        model,
        torch.from_numpy(image_of(sizes[0])),
        "onnx",
        str(tmp_path / "m.onnx"),
        export_metadata(cfg, 6),
    )
    seg = ExportedSegmenter(path)
    for s in sizes:
        out = seg.run(image_of(s))
        assert all(np.abs(out[k] - ref[s][k]).max() <= MAX_ABS_DIFF for k in ref[s]), s
