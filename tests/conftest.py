import os

# One thread per test process: with several processes (distributed tests, or anything else on a
# 2-core machine) OpenMP's spinning threads make torch 10-20x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


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
