"""The GPU checks of benchmarks/gpu_check.py as tests, marked `gpu`: skipped without CUDA.

Not run on a GPU yet (no machine with one so far); GMMSEG_GPU_TESTS_ON_CPU=1 runs them on the
CPU, which checks their code only. What each check asserts is in gpu_check.py's docstring.
"""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_check  # noqa: E402

sys.path.pop(0)

pytestmark = pytest.mark.gpu
DEVICE = "cpu" if os.environ.get("GMMSEG_GPU_TESTS_ON_CPU") == "1" else "cuda"


@pytest.mark.parametrize("name", ["env", "fit_devices", "order_free", "bf16_ids", "ckpt_to_gpu", "deform_attn"])
def test_gpu_check(name):
    ok, detail = gpu_check.CHECKS[name](DEVICE)
    assert ok, detail


@pytest.mark.parametrize("precision", [torch.float16, torch.bfloat16])
def test_amp_step_close_to_fp32(precision):
    if DEVICE == "cuda" and precision == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    ok, detail = gpu_check.check_amp(DEVICE, precision, repeats=0)
    assert ok, detail
