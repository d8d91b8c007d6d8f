"""The GPU checks of benchmarks/gpu_check.py as tests, marked `gpu`: skipped without CUDA.

Not run on a GPU yet (no machine with one so far); GMMSEG_GPU_TESTS_ON_CPU=1 runs them on the
CPU, which checks their code only (the NCCL test still needs 2 GPUs). What each check asserts is
in gpu_check.py's docstring; besides them: gmm_fit's held-out likelihoods with the model on the
device, the speed rows' memory figures, and a 2-process NCCL run of the GMM's push, M-step and
checkpoint gather (tests/_gmm_two_ranks.py, run with GLOO by tests/test_gmm_sharded_memory.py).
"""

import os

import pytest
import torch
from _scripts import load_script

gpu_check = load_script("benchmarks/gpu_check.py")
model_timing = load_script("benchmarks/model_timing.py")
head_cfg, measure_models, random_batch = (
    model_timing.head_cfg,
    model_timing.measure_models,
    model_timing.random_batch,
)

pytestmark = pytest.mark.gpu
DEVICE = "cpu" if os.environ.get("GMMSEG_GPU_TESTS_ON_CPU") == "1" else "cuda"


def _passed_or_skip(ok, detail):
    """A check's (True / False / None = could not run, detail): a test passes, fails or skips alike."""
    if ok is None:
        pytest.skip(detail)
    assert ok, detail


@pytest.mark.parametrize(
    "name", ["env", "fit_devices", "order_free", "bf16_ids", "ckpt_to_gpu", "deform_attn", "nccl"]
)
def test_gpu_check(name):
    _passed_or_skip(*gpu_check.CHECKS[name](DEVICE))


@pytest.mark.parametrize("precision", [torch.float16, torch.bfloat16])
def test_amp_step_close_to_fp32(precision):
    if DEVICE == "cuda" and precision == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    _passed_or_skip(*gpu_check.check_amp(DEVICE, precision, repeats=0))


@pytest.mark.parametrize("precision", [torch.float16, torch.bfloat16])
def test_mask2former_amp_step_close_to_fp32(precision):
    if DEVICE == "cuda" and precision == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    ok, detail = gpu_check.check_mask2former_amp(DEVICE, precision)
    _passed_or_skip(ok, detail)
    assert "GMM state float32 and finite" in detail


def test_gmm_fit_on_the_device_matches_the_formula():
    """heldout_log_likelihoods of tests/test_gmm_fit.py's hand-built model on DEVICE, the labels
    and anomaly masks on the CPU (as the test loader makes them): the numbers of the formula."""
    import numpy as np
    import test_gmm_fit as fit

    model = fit._tiny_model().to(DEVICE)
    known = fit._known_loader()
    for batch in known:
        batch[0]["emb_map"] = batch[0]["emb_map"].to(DEVICE)
    mask = torch.from_numpy(
        np.kron(np.array(fit.ANOMALY_MASK, dtype=np.int64), np.ones((2, 2), dtype=np.int64))
    )
    anomaly = [
        [
            {
                "file_name": "anomaly0.png",
                "image": torch.zeros(3, 4, 4),
                "anomaly_mask": mask,
                "emb_map": fit._emb_map(fit.ANOMALY_GRID).to(DEVICE),
            }
        ]
    ]
    out = fit.heldout_log_likelihoods(model, known, fit.IGN, anomaly)
    exp_own, exp_best = fit._expected_known()
    assert out["known_own_class_ll"] == pytest.approx(exp_own, rel=1e-5)
    assert out["known_best_class_ll"] == pytest.approx(exp_best, rel=1e-5)
    grid = fit.ANOMALY_GRID
    anomalous = (fit.best_ll(grid[0][0]) + fit.best_ll(grid[1][1])) / 2  # the cells of mask value 1
    assert out["anomaly_best_class_ll"] == pytest.approx(anomalous, rel=1e-5)
    assert out["anomaly_split_known_best_class_ll"] == pytest.approx(
        fit.best_ll(grid[0][1]), rel=1e-5
    )


def test_speed_measurement_reports_the_bank_and_the_device_memory():
    """model_timing.measure_models (the speed rows) on DEVICE, a small FPN R-18 pair: the bank's
    bytes are K x M x L x D x 4, the twin has none; on CUDA the GMM model takes at least its bank
    more than the twin once built, and a training step peaks above its start."""
    opts = ["MODEL.DEVICE", DEVICE, "MODEL.GMM.MEMORY_SIZE", "300"]
    cfgs = {p: head_cfg("FPNDecoder", p, 19, 18, opts) for p in ("gmm", "softmax")}
    m = measure_models(
        cfgs, random_batch(2, 64, 64, 19), warmup=1, iters=1, precision=torch.bfloat16
    )
    bank = 19 * 5 * 300 * 64 * 4
    assert (m["gmm"].bank_bytes, m["softmax"].bank_bytes) == (bank, 0)
    assert all(x.train_s > 0 and x.infer_s > 0 for x in m.values())
    if DEVICE == "cuda":
        assert m["gmm"].model_bytes - m["softmax"].model_bytes >= bank
        assert m["gmm"].step_peak_bytes > 0 and m["softmax"].step_peak_bytes > 0
    else:
        assert m["gmm"].model_bytes is None and m["gmm"].step_peak_bytes is None


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="the NCCL run needs 2 GPUs")
def test_two_nccl_ranks_push_m_step_and_gather_with_equal_em_digests(tmp_path):
    """tests/_gmm_two_ranks.py (the GLOO run of tests/test_gmm_sharded_memory.py) with NCCL, one
    GPU per rank: equal EM digests on both ranks after every push and M-step, the checkpoint
    gathered from the shards bitwise the replicated memory."""
    from _common import run_ranks
    from _gmm_two_ranks import check_two_ranks, train_two_ranks

    run_ranks(train_two_ranks, 2, (str(tmp_path),), backend="nccl")
    check_two_ranks(str(tmp_path))
