"""Mask2Former's post-hoc class temperature: MODEL.MASK_FORMER.TEST.CLASS_TEMPERATURE at inference
(meta_arch.py), its fit (gmmseg/analysis/temperature.py) and the command line
(tools/fit_temperature.py), on hand-computed examples, synthetic data drawn at a known temperature
and the demo Mask2Former (untrained: the command, not the numbers, is tested)."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest
import torch
from _mask_former_helpers import NUM_CLASSES, tiny_mask_former_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import sem_seg_postprocess
from torch.nn import functional as F

from gmmseg import add_gmmseg_config
from gmmseg.analysis.temperature import fit_class_temperature, pixel_class_log_probs
from gmmseg.evaluation.metrics import (
    CALIBRATION_BINS,
    calibration_bin_sums,
    expected_calibration_error,
)
from gmmseg.modeling.mask_former import query_anomaly_score, semantic_inference
from gmmseg.modeling.mask_former.meta_arch import _contract, _split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "MODEL.MASK_FORMER.TEST.CLASS_TEMPERATURE"

# ----------------------------------------------------------------------------- (a) by hand
# K = 2 classes + "no object", 2 queries:
#   q0 logits (ln 4, 0, 0): T = 1 -> (4, 1, 1) / 6 = (2/3, 1/6, 1/6); T = 0.5 -> (16, 1, 1) / 18 = (8/9, 1/18, 1/18)
#   q1 logits (0, ln 2, ln 2): T = 1 -> (1, 2, 2) / 5; T = 0.5 -> (1, 4, 4) / 9
# 3 pixels, mask probabilities (q0, q1): x1 (1, 0), x2 (1/2, 1/2), x3 (1/4, 1)
#   (mask logits +50 -> 1, 0 -> 1/2, -ln 3 -> 1/4, -50 -> 0).
# Semantic scores s_c(x) = sum_q p_q(c) m_q(x), c < K:
#   T = 0.5: x1 (8/9, 1/18); x2 ((8/9 + 1/9) / 2, (1/18 + 4/9) / 2) = (1/2, 1/4);
#            x3 (2/9 + 1/9, 1/72 + 4/9) = (1/3, 11/24)
#   T = 1:   x1 (2/3, 1/6); x2 ((2/3 + 1/5) / 2, (1/6 + 2/5) / 2) = (13/30, 17/60); x3 (1/6 + 1/5, 1/24 + 2/5) = (11/30, 53/120)
# Anomaly: best known-class log-likelihood q0 -1, q1 -4 (the no-object column is not evidence);
# weights w_q(x) = m_q(x) (1 - p_q(no object)) with the UNtempered p_q at every T: 5/6, 3/5.
#   score(x) = -sum_q w_q best_q / sum_q w_q
#   x1 1 (one query: its own density); x2 (5/6 + 12/5) / (5/6 + 3/5) = 97/43; x3 (5/24 + 12/5) / (5/24 + 3/5) = 313/97
#   (tempered weights, 17/18 and 5/9 at T = 0.5, would give 57/27 and 177/57 instead)
LN = math.log
HAND_LOGITS = torch.tensor([[LN(4), 0.0, 0.0], [0.0, LN(2), LN(2)]])
HAND_MASK_LOGITS = torch.tensor([[[50.0, 0.0, -LN(3)]], [[-50.0, 0.0, 50.0]]])  # (Q, H = 1, W = 3)
HAND_LOG_LIK = torch.tensor([[-1.0, -3.0, 7.0], [-6.0, -4.0, 9.0]])
HAND_SEMANTIC = {
    0.5: [[8 / 9, 1 / 2, 1 / 3], [1 / 18, 1 / 4, 11 / 24]],
    1.0: [[2 / 3, 13 / 30, 11 / 30], [1 / 6, 17 / 60, 53 / 120]],
}
HAND_ANOMALY = [1.0, 97 / 43, 313 / 97]  # whatever the temperature


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_tempered_scores_and_untempered_anomaly_by_hand(temperature):
    sem = semantic_inference(HAND_LOGITS, HAND_MASK_LOGITS, temperature=temperature)
    torch.testing.assert_close(
        sem[:, 0], torch.tensor(HAND_SEMANTIC[temperature]), rtol=0, atol=1e-6
    )
    anomaly = query_anomaly_score(HAND_LOGITS, HAND_LOG_LIK, HAND_MASK_LOGITS)
    torch.testing.assert_close(anomaly[0], torch.tensor(HAND_ANOMALY), rtol=0, atol=1e-5)
    # inside inference: the semantic channels tempered, the anomaly's two columns not
    scores = _contract(HAND_LOGITS, HAND_MASK_LOGITS.sigmoid(), HAND_LOG_LIK, temperature)
    torch.testing.assert_close(
        scores[:2, 0], torch.tensor(HAND_SEMANTIC[temperature]), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(
        _split(scores, True)[1][0], torch.tensor(HAND_ANOMALY), rtol=0, atol=1e-5
    )


def test_default_temperature_is_the_untempered_computation():
    assert torch.equal(
        semantic_inference(HAND_LOGITS, HAND_MASK_LOGITS),
        semantic_inference(HAND_LOGITS, HAND_MASK_LOGITS, temperature=1.0),
    )
    assert torch.equal(
        _contract(HAND_LOGITS, HAND_MASK_LOGITS.sigmoid(), HAND_LOG_LIK),
        _contract(HAND_LOGITS, HAND_MASK_LOGITS.sigmoid(), HAND_LOG_LIK, temperature=1.0),
    )


# ----------------------------------------------------------------------------- (b) the model
def _tiny_model(temperature=None, **opts):
    cfg = tiny_mask_former_cfg("gmm")
    if temperature is not None:
        cfg.MODEL.MASK_FORMER.TEST.CLASS_TEMPERATURE = temperature
    for k, v in opts.items():
        cfg.MODEL.MASK_FORMER.TEST[k] = v
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _inputs():
    image = (
        torch.rand(3, 50, 70, generator=torch.Generator().manual_seed(3)) * 255
    )  # padded to 64 x 96
    return [{"image": image}, {"image": image, "height": 100, "width": 140}]


def _untempered_reference(model, inputs):
    """The inference of the code before the temperature existed, restated: softmax of the raw query
    logits, one contraction with the anomaly's two columns, resized, then the log of the scores."""
    captured = {}
    handle = model.sem_seg_head.register_forward_hook(lambda m, i, o: captured.update(o))
    with torch.no_grad():
        model(inputs)
    handle.remove()
    images = model.preprocess_images(inputs)
    masks = F.interpolate(
        captured["pred_masks"], size=images.tensor.shape[-2:], mode="bilinear", align_corners=False
    )
    refs = []
    for i, (x, size) in enumerate(zip(inputs, images.image_sizes)):
        prob = captured["pred_logits"][i].float().softmax(-1)
        objectness = 1.0 - prob[:, -1]
        best = captured["pred_log_likelihood"][i].float()[:, :-1].amax(-1)
        weights = torch.cat(
            [prob[:, :-1], (best * objectness)[:, None], objectness[:, None]], dim=1
        )
        scores = torch.einsum("qc,qhw->chw", weights, masks[i].float().sigmoid())
        scores = sem_seg_postprocess(
            scores, size, x.get("height", size[0]), x.get("width", size[1])
        )
        refs.append(
            {
                "sem_seg": scores[:-2].clamp_min(1e-8).log(),
                "anomaly_score": -scores[-2] / scores[-1].clamp_min(1e-12),
            }
        )
    return refs


def test_temperature_one_is_todays_inference_and_half_sharpens():
    model, inputs = _tiny_model(), _inputs()
    assert model.class_temperature == 1.0  # the default of the config
    with torch.no_grad():
        plain = model(inputs)
    for out, ref in zip(plain, _untempered_reference(model, inputs)):
        assert torch.equal(out["sem_seg"], ref["sem_seg"]) and torch.equal(
            out["anomaly_score"], ref["anomaly_score"]
        )

    sharp = _tiny_model(0.5)
    assert sharp.class_temperature == 0.5  # from the config key
    sharp.load_state_dict(model.state_dict())
    with torch.no_grad():
        tempered = sharp(inputs)
    for out, t in zip(plain, tempered):
        assert (
            t["sem_seg"].shape == out["sem_seg"].shape
            and t["anomaly_score"].shape == out["anomaly_score"].shape
        )
        assert torch.equal(
            t["anomaly_score"], out["anomaly_score"]
        )  # the anomaly map is not tempered
        confidence = {
            name: o["sem_seg"].softmax(0).amax(0).mean() for name, o in (("T=1", out), ("T=0.5", t))
        }
        assert confidence["T=0.5"] > confidence["T=1"] + 0.01, confidence


@pytest.mark.parametrize("before_inference", [False, True])
def test_query_predictions_give_inference_scores_at_any_temperature(before_inference):
    """What the fit computes from query_predictions is softmax(sem_seg) of inference at that T."""
    model, inputs = _tiny_model(SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE=before_inference), _inputs()
    with torch.no_grad():
        parts = model.query_predictions(inputs)
        for temperature in (0.5, 2.0):
            model.class_temperature = temperature
            outputs = model(inputs)
            for part, out in zip(parts, outputs):
                q, h, w = part["mask_probs"].shape
                assert (h, w) == out["sem_seg"].shape[1:]
                log_probs = pixel_class_log_probs(
                    part["query_logits"][None].double(),
                    part["mask_probs"].reshape(1, q, -1).double(),
                    temperature,
                )
                expected = out["sem_seg"].double().log_softmax(0).reshape(NUM_CLASSES, -1).T
                torch.testing.assert_close(log_probs[0], expected, rtol=0, atol=1e-4)
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        model.query_predictions(inputs)


def test_traced_model_carries_the_temperature():
    """Export traces the eager model (gmmseg/deploy/export.py): T is a Python float there, so the
    trace records the division by it; tests/test_deploy_mask_former.py checks the written files."""
    from gmmseg.deploy import prepare_for_export
    from gmmseg.deploy.export import trace_adapter

    image = torch.from_numpy(
        np.random.default_rng(1).uniform(0, 255, (3, 64, 64)).astype(np.float32)
    )
    model = _tiny_model(0.5)
    with torch.no_grad():
        eager = model([{"image": image}])[0]
        model.class_temperature = 1.0
        untempered = model([{"image": image}])[0]
        model.class_temperature = 0.5
    prepare_for_export(model)
    adapter, names = trace_adapter(model, image)
    # check_trace and the profiling executor only cost time here (seconds each on a busy CPU)
    with torch.no_grad(), torch.jit.optimized_execution(False):
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
        out = dict(zip(names, traced(image)))
    torch.testing.assert_close(out["sem_seg"], eager["sem_seg"], rtol=0, atol=1e-4)
    torch.testing.assert_close(out["anomaly_score"], eager["anomaly_score"], rtol=0, atol=1e-3)
    assert (out["sem_seg"] - untempered["sem_seg"]).abs().max() > 1e-2


# ----------------------------------------------------------------------------- (d) the key
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_invalid_temperature_is_refused_naming_the_key(bad):
    cfg = tiny_mask_former_cfg("gmm")
    cfg.MODEL.MASK_FORMER.TEST.CLASS_TEMPERATURE = bad
    with pytest.raises(
        ValueError, match=rf"{KEY.replace('.', '[.]')} must be a finite number > 0.*got {bad}"
    ):
        build_model(cfg)


# ----------------------------------------------------------------------------- (c) the fit
def _drawn_at(temperature, images=16, queries=5, classes=3, pixels=400, seed=0):
    """Samples whose labels are drawn from the per-pixel scores at `temperature`: each pixel is
    mostly claimed by one query, the query logits spread over a few units (as trained ones)."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(images):
        logits = 2.0 * torch.randn(queries, classes + 1, generator=g)
        owner = torch.randint(0, queries, (pixels,), generator=g)
        masks = (
            0.05
            + 0.9 * F.one_hot(owner, queries).T.float()
            + 0.05 * torch.rand(queries, pixels, generator=g)
        )
        probs = pixel_class_log_probs(logits[None].double(), masks[None].double(), temperature)[
            0
        ].exp()
        samples.append((logits, masks, torch.multinomial(probs, 1, generator=g).squeeze(1)))
    return samples


@pytest.mark.parametrize("true_temperature", [0.4, 2.5])
def test_fit_recovers_the_temperature_the_labels_were_drawn_at(true_temperature):
    fit = fit_class_temperature(_drawn_at(true_temperature))
    assert fit["temperature"] == pytest.approx(true_temperature, rel=0.1), fit
    assert fit["nll_after"] < fit["nll_before"] and fit["ece_after"] < fit["ece_before"], fit
    assert fit["pixels"] == 16 * 400 and fit["images"] == 16
    # the NLL reported is the mean over the pixels at that temperature
    logits = torch.stack([s[0] for s in _drawn_at(true_temperature)]).double()
    masks = torch.stack([s[1] for s in _drawn_at(true_temperature)]).double()
    labels = torch.stack([s[2] for s in _drawn_at(true_temperature)])
    log_probs = pixel_class_log_probs(logits, masks, fit["temperature"])
    assert fit["nll_after"] == pytest.approx(
        float(-log_probs.gather(-1, labels[..., None]).mean()), rel=1e-9
    )


def test_fit_pads_images_of_different_sizes_without_changing_the_nll():
    samples = _drawn_at(2.5, images=4)
    shorter = [
        (lg[:3], mk[:3, :250], lb[:250]) if i % 2 else (lg, mk, lb)
        for i, (lg, mk, lb) in enumerate(samples)
    ]
    fit = fit_class_temperature(shorter)
    assert fit["pixels"] == 2 * 400 + 2 * 250
    # the same pixels, one image at a time and unpadded: the mean NLL over all pixels
    total = 0.0
    for logits, masks, labels in shorter:
        log_probs = pixel_class_log_probs(
            logits[None].double(), masks[None].double(), fit["temperature"]
        )[0]
        total -= float(log_probs.gather(-1, labels[:, None]).sum())
    assert fit["nll_after"] == pytest.approx(total / fit["pixels"], rel=1e-9)


# Two pixels, each owned by one query (mask probability 1, the other 0), "no object" ~ 0:
#   pixel A: q0 (0.61, 0.39), label 0 -> confidence 0.61, correct
#   pixel B: q1 (0.31, 0.69), label 0 -> confidence 0.69, wrong
# ECE at T = 1: with 15 bins (edges k / 15) 0.61 and 0.69 fall in different bins:
#   1/2 |0.61 - 1| + 1/2 |0.69 - 0| = 0.54 -> 54 %; with 10 bins both in (0.6, 0.7]: |0.65 - 0.5| = 15 %.
ECE_LOGITS = torch.tensor([[LN(0.61), LN(0.39), -40.0], [LN(0.31), LN(0.69), -40.0]])
ECE_SAMPLE = (ECE_LOGITS, torch.eye(2), torch.tensor([0, 0]))


def test_ece_uses_the_evaluators_bins_by_default():
    """The fit's ECE is the evaluators' (CalibrationEvaluator's default, CALIBRATION_BINS): a fit
    that kept its own bin count would report another figure for the same pixels."""
    expected = expected_calibration_error(
        *calibration_bin_sums(np.array([0.61, 0.69]), np.array([1, 0]), CALIBRATION_BINS)
    )
    fit = fit_class_temperature([ECE_SAMPLE])
    assert fit["ece_before"] == pytest.approx(100 * expected["ECE"], abs=1e-6)
    assert fit["accuracy_before"] == pytest.approx(50.0)
    # by hand, at the bin counts named
    assert fit_class_temperature([ECE_SAMPLE], num_bins=15)["ece_before"] == pytest.approx(
        54.0, abs=1e-6
    )
    assert fit_class_temperature([ECE_SAMPLE], num_bins=10)["ece_before"] == pytest.approx(
        15.0, abs=1e-6
    )


def test_fit_refuses_bad_samples_with_what_is_wrong():
    logits, masks, labels = _drawn_at(1.0, images=1)[0]
    with pytest.raises(ValueError, match=r"labels must be class ids in 0..2"):
        fit_class_temperature([(logits, masks, labels + 1)])
    with pytest.raises(ValueError, match=r"masks \(5, 400\) do not match 5 queries x 399"):
        fit_class_temperature([(logits, masks, labels[:-1])])
    with pytest.raises(ValueError, match="no sample"):
        fit_class_temperature([])
    with pytest.raises(ValueError, match="bounds"):
        fit_class_temperature([(logits, masks, labels)], bounds=(2.0, 1.0))


# ----------------------------------------------------------------------------- (e) the tool
DATASET = "temperature_test_demo_train"
UNLABELLED = "temperature_test_unlabelled"
M2F_CONFIG = os.path.join(ROOT, "configs", "demo", "mask2former_r18_gmm.yaml")
OPTS = ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "MODEL.GMM.MEMORY_SIZE", "20"]


@pytest.fixture(scope="module")
def tool_setup(tmp_path_factory):
    """A 4-image demo training split under its own name, an unlabelled dataset, the demo
    Mask2Former GMM (random weights) saved by the checkpointer, and the tool's module."""
    from gmmseg.data.demo import DEMO_CLASSES, load_demo_split

    root = str(tmp_path_factory.mktemp("temperature_data"))
    sizes = {"train": 4, "val": 1, "anomaly": 1, "near": 1}
    DatasetCatalog.register(DATASET, lambda: load_demo_split("train", root, sizes=sizes))
    MetadataCatalog.get(DATASET).set(stuff_classes=list(DEMO_CLASSES), ignore_label=255)
    DatasetCatalog.register(
        UNLABELLED,
        lambda: [
            {k: v for k, v in d.items() if k != "sem_seg_file_name"}
            for d in DatasetCatalog.get(DATASET)
        ],
    )
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(M2F_CONFIG)
    cfg.merge_from_list(OPTS)
    torch.manual_seed(0)
    weights = tmp_path_factory.mktemp("temperature_run")
    DetectionCheckpointer(build_model(cfg), save_dir=str(weights)).save("model_final")
    spec = importlib.util.spec_from_file_location(
        "fit_temperature_tool", os.path.join(ROOT, "tools", "fit_temperature.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    yield tool, str(weights / "model_final.pth")
    DatasetCatalog.remove(DATASET)
    DatasetCatalog.remove(UNLABELLED)
    MetadataCatalog.remove(DATASET)


def test_tool_fits_on_the_demo_model_and_writes_json(tool_setup, tmp_path, capsys):
    tool, weights = tool_setup
    out = tmp_path / "temperature.json"
    fit = tool.main(
        [
            "--config-file",
            M2F_CONFIG,
            "--dataset",
            DATASET,
            "--images",
            "3",
            "--pixels",
            "150",
            "--output",
            str(out),
            *OPTS,
            "MODEL.WEIGHTS",
            weights,
        ]
    )
    saved = json.loads(out.read_text())
    assert saved == fit
    assert 0.05 <= saved["temperature"] <= 20.0
    assert saved["nll_after"] <= saved["nll_before"]
    assert saved["images"] == 3 and saved["pixels"] == 3 * 150 and saved["dataset"] == DATASET
    printed = capsys.readouterr().out
    assert f"{KEY} {saved['temperature']:.4g}" in printed and "ECE" in printed


def test_tool_reports_ece_over_the_configs_calibration_bins(tool_setup):
    """TEST.OPEN_WORLD.CALIBRATION_BINS, the key the evaluators read, sets the tool's ECE bins too."""
    tool, weights = tool_setup
    argv = [
        "--config-file",
        M2F_CONFIG,
        "--dataset",
        DATASET,
        "--images",
        "2",
        "--pixels",
        "100",
        *OPTS,
    ]
    # 1000 bins: about one pixel per bin, a figure no other bin count gives on these pixels
    fit = tool.main(argv + ["TEST.OPEN_WORLD.CALIBRATION_BINS", "1000", "MODEL.WEIGHTS", weights])
    assert fit["calibration_bins"] == 1000
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(M2F_CONFIG)
    cfg.merge_from_list(OPTS + ["MODEL.WEIGHTS", weights])
    from gmmseg.inference import build_inference_model

    model = build_inference_model(cfg)
    label_files = {d["file_name"]: d["sem_seg_file_name"] for d in DatasetCatalog.get(DATASET)}
    samples = tool.collect_samples(model, cfg, DATASET, label_files, 2, 100, 0)
    by_config, by_default = (
        fit_class_temperature(samples, num_bins=1000),
        fit_class_temperature(samples),
    )
    assert fit["ece_before"] == pytest.approx(by_config["ece_before"], rel=1e-9)
    assert fit["ece_after"] == pytest.approx(by_config["ece_after"], rel=1e-9)
    assert by_default["ece_before"] != pytest.approx(
        by_config["ece_before"], rel=1e-3
    )  # the check can fail


def test_tool_refuses_what_it_cannot_fit(tool_setup):
    tool, weights = tool_setup
    per_pixel = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")
    with pytest.raises(SystemExit, match="META_ARCHITECTURE is 'PerPixelSegmentor'"):
        tool.main(["--config-file", per_pixel, *OPTS, "MODEL.WEIGHTS", weights])
    with pytest.raises(SystemExit, match=f"dataset '{UNLABELLED}' has no semantic ground truth"):
        tool.main(
            ["--config-file", M2F_CONFIG, "--dataset", UNLABELLED, *OPTS, "MODEL.WEIGHTS", weights]
        )
    with pytest.raises(SystemExit, match="'gmmseg_demo_val' is in DATASETS.TEST"):
        tool.main(
            [
                "--config-file",
                M2F_CONFIG,
                "--dataset",
                "gmmseg_demo_val",
                *OPTS,
                "MODEL.WEIGHTS",
                weights,
            ]
        )
