"""Fitted anomaly scores: standardised on known pixels (gmmseg/scores/table.py, scores/fit.py,
tools/fit_scores.py); by hand, a fit that recovers known constants, the tool's refusals, and the
model's and the exported file's fitted map."""

import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from _deploy_helpers import demo_cfg, image_of, trained_like
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from PIL import Image

from gmmseg.deploy import export_model, prepare_for_export
from gmmseg.scores import fitted_scores
from gmmseg.scores.fit import KnownPixelStatistics, load_fit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stats(k=2):
    return {
        "likelihood": {"mean": [10.0, 20.0], "std": [2.0, 5.0], "mean_all": 15.0, "std_all": 4.0},
        "energy": {"mean": [0.0] * k, "std": [1.0] * k, "mean_all": -3.0, "std_all": 0.5},
        "max_logit": {"mean": [-2.0, -1.0], "std": [1.0, 0.5], "mean_all": -1.5, "std_all": 1.0},
    }


def test_fitted_scores_by_hand():
    # two pixels, predicted class 0 (logits 2, 0) and class 1 (logits 1, 3)
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    maps = {"likelihood": torch.tensor([14.0, 10.0])}
    s = fitted_scores(maps, logits, _stats())
    assert list(s) == ["likelihood_std", "max_logit_std", "likelihood_energy"]
    torch.testing.assert_close(
        s["likelihood_std"], torch.tensor([(14 - 10) / 2.0, (10 - 20) / 5.0])
    )
    # max logit score -max_c logit = -2, -3; per predicted class: (-2 + 2) / 1, (-3 + 1) / 0.5
    torch.testing.assert_close(s["max_logit_std"], torch.tensor([0.0, -4.0]))
    energy = -torch.logsumexp(logits, 0)
    want = (maps["likelihood"] - 15.0) / 4.0 + (energy + 3.0) / 0.5
    torch.testing.assert_close(s["likelihood_energy"], want)
    with pytest.raises(ValueError, match=r"needs the known-pixel statistics of \['entropy'\]"):
        fitted_scores(maps, logits, _stats(), ["likelihood_entropy"])


def test_known_pixel_statistics_recover_known_constants():
    # class 0: N(5, 2^2), class 1: N(-1, 0.5^2), 20,000 pixels each; class 2 never predicted
    g = torch.Generator().manual_seed(0)
    values = torch.cat(
        [5 + 2 * torch.randn(20000, generator=g), -1 + 0.5 * torch.randn(20000, generator=g)]
    )
    predicted = torch.cat([torch.zeros(20000), torch.ones(20000)]).long()
    st = KnownPixelStatistics(3)
    for a in range(0, 40000, 7000):  # streamed in pieces
        st.add({"likelihood": values[a : a + 7000]}, predicted[a : a + 7000])
    r = st.result()["likelihood"]
    assert r["mean"][0] == pytest.approx(5, abs=0.05) and r["std"][0] == pytest.approx(2, rel=0.02)
    assert r["mean"][1] == pytest.approx(-1, abs=0.02) and r["std"][1] == pytest.approx(
        0.5, rel=0.02
    )
    assert r["count"] == [20000, 20000, 0]
    assert r["mean_all"] == pytest.approx(float(values.double().mean()), abs=1e-9)
    assert r["std_all"] == pytest.approx(float(values.double().std(unbiased=False)), rel=1e-9)
    # the class never predicted falls back on all pixels' statistics
    assert r["mean"][2] == pytest.approx(r["mean_all"]) and r["std"][2] == pytest.approx(
        r["std_all"]
    )


def test_load_fit_names_file_and_problem(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="MODEL.ANOMALY_FIT '.*missing.json' cannot be read"
    ):
        load_fit(str(tmp_path / "missing.json"), 2)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json' is not JSON"):
        load_fit(str(bad), 2)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"temperature": 1.0}))
    with pytest.raises(ValueError, match="has no 'scores' entry"):
        load_fit(str(other), 2)
    three = tmp_path / "three.json"
    three.write_text(json.dumps({"scores": {"energy": {"mean": [0, 0, 0], "std": [1, 1, 1]}}}))
    with pytest.raises(ValueError, match="'energy' was fitted for 3 classes, the model has 2"):
        load_fit(str(three), 2)


DATASET = "fit_scores_test_train"
ANOMALY = "fit_scores_test_anomaly"
CONFIG = os.path.join(ROOT, "configs", "demo", "fpn_r18_gmm.yaml")
OPTS = ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "MODEL.GMM.MEMORY_SIZE", "20"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The demo GMM (moved off its initialisation) saved, a 3-image training split and an anomaly
    split under their own names, the tool run on the training split."""
    from detectron2.checkpoint import DetectionCheckpointer

    from gmmseg.data.demo import DEMO_CLASSES, load_demo_split

    root = str(tmp_path_factory.mktemp("fit_scores_data"))
    sizes = {"train": 3, "val": 1, "anomaly": 1, "near": 1}
    DatasetCatalog.register(DATASET, lambda: load_demo_split("train", root, sizes=sizes))
    DatasetCatalog.register(ANOMALY, lambda: load_demo_split("anomaly", root, sizes=sizes))
    for name in (DATASET, ANOMALY):
        MetadataCatalog.get(name).set(stuff_classes=list(DEMO_CLASSES), ignore_label=255)
    run = tmp_path_factory.mktemp("fit_scores_run")
    torch.manual_seed(0)
    DetectionCheckpointer(
        trained_like(build_model(demo_cfg("gmm", *OPTS))), save_dir=str(run)
    ).save("model_final")
    spec = importlib.util.spec_from_file_location(
        "fit_scores_tool", os.path.join(ROOT, "tools", "fit_scores.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    weights, out = str(run / "model_final.pth"), str(run / "fit.json")
    fit = tool.main(
        [
            "--config-file",
            CONFIG,
            "--dataset",
            DATASET,
            "--images",
            "3",
            "--pixels",
            "200",
            "--output",
            out,
            *OPTS,
            "MODEL.WEIGHTS",
            weights,
        ]
    )
    yield tool, weights, out, fit
    for name in (DATASET, ANOMALY):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _fitted_cfg(weights, out, score):
    """The demo GMM's config with the saved weights, the fit file `out` and `score` as its map."""
    return demo_cfg(
        "gmm",
        *OPTS,
        "MODEL.WEIGHTS",
        weights,
        "MODEL.ANOMALY_FIT",
        out,
        "MODEL.ANOMALY_SCORE",
        score,
    )


def test_the_tool_fits_every_score_of_the_model(fitted):
    _, _, out, fit = fitted
    assert json.load(open(out)) == fit
    assert fit["images"] == 3 and fit["dataset"] == DATASET
    assert {"likelihood", "marginal", "msp", "entropy", "max_logit", "energy"} <= set(fit["scores"])
    assert sum(fit["scores"]["likelihood"]["count"]) == 3 * 200
    assert fit["fitted_scores"] == [
        "likelihood_std",
        "max_logit_std",
        "likelihood_energy",
        "likelihood_entropy",
        "background_energy",
        "background_entropy",
        "likelihood_ratio",
        "background",
    ]
    # the background score's own statistics, from a second draw of pixels with the density attached
    assert sum(fit["scores"]["background"]["count"]) == 3 * 200
    bg = fit["background"]
    assert len(bg["weights"]) == 16 and len(bg["means"][0]) == 64 and bg["embeddings"] == 3 * 500
    assert sum(bg["weights"]) == pytest.approx(1.0)


def test_the_tool_refuses_anomaly_and_evaluation_sets(fitted):
    tool, weights, out, _ = fitted
    with pytest.raises(SystemExit, match=f"'{ANOMALY}' has anomaly masks"):
        tool.main(
            [
                "--config-file",
                CONFIG,
                "--dataset",
                ANOMALY,
                "--output",
                out,
                *OPTS,
                "MODEL.WEIGHTS",
                weights,
            ]
        )
    with pytest.raises(SystemExit, match="'gmmseg_demo_val' is in DATASETS.TEST"):
        tool.main(
            [
                "--config-file",
                CONFIG,
                "--dataset",
                "gmmseg_demo_val",
                "--output",
                out,
                *OPTS,
                "MODEL.WEIGHTS",
                weights,
            ]
        )


def test_the_model_returns_the_fitted_scores_and_the_export_its_map(fitted, tmp_path):
    from gmmseg.inference import build_inference_model

    _, weights, out, fit = fitted
    cfg = _fitted_cfg(weights, out, "likelihood_energy")
    model = build_inference_model(cfg)
    image = torch.from_numpy(image_of((96, 128)))
    with torch.no_grad():
        res = model([{"image": image}])[0]
    maps = res["anomaly_scores"]
    assert {"likelihood_std", "likelihood_energy", "max_logit_std"} <= set(maps)
    s = fit["scores"]
    energy = -torch.logsumexp(res["sem_seg"], 0)
    want = (maps["likelihood"] - s["likelihood"]["mean_all"]) / s["likelihood"]["std_all"] + (
        energy - s["energy"]["mean_all"]
    ) / s["energy"]["std_all"]
    torch.testing.assert_close(res["anomaly_score"], want, rtol=1e-5, atol=1e-4)
    # the background density is attached: the likelihood ratio is -max_c log p(x|c) + log p_bg(x)
    assert "likelihood_ratio" in maps and model.sem_seg_head.predictor.background is not None
    # the exported file returns the same fitted map as the eager model
    prepare_for_export(model)
    with torch.no_grad():
        eager = model([{"image": image}])[0]
    assert sorted(eager) == ["anomaly_score", "sem_seg"]
    path = export_model(
        model,
        image,
        "torchscript",
        str(tmp_path / "m.ts"),
        {"outputs": ["anomaly_score", "sem_seg"]},
    )
    traced = torch.jit.load(path)
    with torch.no_grad():
        got = traced(image)
    np.testing.assert_allclose(got[0].numpy(), eager["anomaly_score"].numpy(), atol=1e-3, rtol=1e-4)


def test_background_density_is_sklearns_mixture():
    from sklearn.mixture import GaussianMixture

    from gmmseg.gmm.background import BackgroundDensity

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.3, (300, 4)), rng.normal(1, 0.1, (200, 4))])
    gm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(x)
    bg = BackgroundDensity(
        torch.tensor(gm.weights_), torch.tensor(gm.means_), torch.tensor(np.sqrt(gm.covariances_))
    )
    got = bg(torch.tensor(x, dtype=torch.float32))
    np.testing.assert_allclose(got.numpy(), gm.score_samples(x), rtol=1e-4, atol=1e-4)
    assert BackgroundDensity.from_dict(bg.to_dict())(torch.zeros(1, 4)).item() == pytest.approx(
        bg(torch.zeros(1, 4)).item(), rel=1e-5
    )
    assert bg.state_dict() == {}  # never in a checkpoint: the fit file holds it
    with pytest.raises(ValueError, match="weights and stds must be > 0"):
        BackgroundDensity(torch.ones(1), torch.zeros(1, 2), torch.zeros(1, 2))


def test_likelihood_ratio_by_hand():
    from gmmseg.scores import compute_scores

    ll = torch.tensor([[30.0, 10.0], [25.0, 12.0]])
    s = compute_scores(
        {"log_likelihood": ll, "log_background": torch.tensor([28.0, 20.0])},
        ["likelihood_ratio", "background"],
    )
    torch.testing.assert_close(s["likelihood_ratio"], torch.tensor([28.0 - 30.0, 20.0 - 12.0]))
    torch.testing.assert_close(s["background"], torch.tensor([-28.0, -20.0]))


def test_exported_likelihood_ratio_equals_eager(fitted, tmp_path):
    from gmmseg.inference import build_inference_model

    _, weights, out, _ = fitted
    model = build_inference_model(_fitted_cfg(weights, out, "likelihood_ratio"))
    prepare_for_export(model)
    image = torch.from_numpy(image_of((96, 128)))
    with torch.no_grad():
        eager = model([{"image": image}])[0]["anomaly_score"]
        traced = torch.jit.load(
            export_model(model, image, "torchscript", str(tmp_path / "r.ts"), {})
        )
        got = traced(image)[0]
    np.testing.assert_allclose(got.numpy(), eager.numpy(), atol=1e-3, rtol=1e-4)


def test_background_statistics_are_those_of_the_models_background_map(fitted):
    """The fit's "background" statistics describe the map the model returns with the fit attached:
    on the 3 training images (the second draw takes the same 3, other pixels), the mean and std of
    its background map over all labelled pixels are close to the fitted ones; background_energy is
    z(background) + z(energy) with them."""
    from detectron2.data.detection_utils import read_image

    from gmmseg.inference import build_inference_model

    _, weights, out, fit = fitted
    cfg = _fitted_cfg(weights, out, "background_energy")
    model = build_inference_model(cfg)
    values = []
    for d in DatasetCatalog.get(DATASET):
        # as the test loader gives it at the demo's size (96 x 128, MIN_SIZE_TEST 96): no resize
        image = read_image(d["file_name"], format=cfg.INPUT.FORMAT)
        labels = torch.from_numpy(np.array(Image.open(d["sem_seg_file_name"]))).long()
        inputs = {"image": torch.from_numpy(image.transpose(2, 0, 1).copy())}
        with torch.no_grad():
            res = model([inputs])[0]
        background = res["anomaly_scores"]["background"]
        values.append(background[labels != 255])
        s = fit["scores"]
        energy = -torch.logsumexp(res["sem_seg"], 0)
        want = (background - s["background"]["mean_all"]) / s["background"]["std_all"] + (
            energy - s["energy"]["mean_all"]
        ) / s["energy"]["std_all"]
        torch.testing.assert_close(res["anomaly_score"], want, rtol=1e-5, atol=1e-4)
    v = torch.cat(values).double()
    st = fit["scores"]["background"]
    assert abs(v.mean().item() - st["mean_all"]) < 0.1 * v.std().item()
    # 600 sampled pixels against all 36,864: the std of a skewed score to within 20 %
    assert st["std_all"] == pytest.approx(v.std().item(), rel=0.2)
    # and not the statistics of another score of the model
    assert abs(s["likelihood"]["mean_all"] - st["mean_all"]) > 0.5 * st["std_all"]
