import os

# One thread per test process: with several processes (distributed tests, or anything else on a
# 2-core machine) OpenMP's spinning threads make torch 10-20x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# Tests marked `gpu` need a CUDA device and are skipped without one (`pytest -m gpu` runs only
# them). GMMSEG_GPU_TESTS_ON_CPU=1 runs them on the CPU instead: their logic, not CUDA.
GPU_TESTS_ON_CPU = os.environ.get("GMMSEG_GPU_TESTS_ON_CPU") == "1"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gpu: needs a CUDA device; skipped without one (tests/test_gpu.py)"
    )
    config.addinivalue_line(
        "markers", "slow: takes over a minute (`-m 'not slow'` leaves these out)"
    )


def pytest_collection_modifyitems(config, items):
    if GPU_TESTS_ON_CPU or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA device (none available); GMMSEG_GPU_TESTS_ON_CPU=1 runs it on the CPU"
    )
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def demo_datasets_root(tmp_path_factory):
    """The demo dataset, generated once per test session; the DETECTRON2_DATASETS root holding it."""
    from gmmseg.data.demo import generate_demo_dataset

    root = tmp_path_factory.getbasetemp() / "gmmseg_datasets"
    generate_demo_dataset(str(root))
    return root
