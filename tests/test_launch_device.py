"""The distributed backend follows MODEL.DEVICE (gmmseg/engine/launch.py), also on a machine with a
GPU: a CPU config gets GLOO and never touches CUDA; a CUDA config that cannot get its GPUs stops
before spawning, naming MODEL.DEVICE and the counts. "A GPU host" is simulated by patching
torch.cuda (this machine has none)."""

import pytest
import torch
import torch.distributed as dist
from _common import free_port
from detectron2.utils import comm

from gmmseg.engine import launch as launch_mod


@pytest.fixture
def gpu_host(monkeypatch):
    """torch.cuda says one GPU is present; selecting it fails the test."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    def no_gpu_use(*a, **k):
        raise AssertionError("a CPU config touched the GPU")

    monkeypatch.setattr(torch.cuda, "set_device", no_gpu_use)


def test_backend_follows_the_device():
    assert launch_mod.backend_for_device("cpu") == "gloo"
    assert launch_mod.backend_for_device("cuda") == "nccl"
    assert launch_mod.backend_for_device("cuda:1") == "nccl"
    with pytest.raises(ValueError, match="MODEL.DEVICE 'meta'"):
        launch_mod.backend_for_device("meta")
    with pytest.raises(ValueError, match="MODEL.DEVICE 'gpu0' is not a torch device"):
        launch_mod.backend_for_device("gpu0")


def test_cpu_config_on_a_gpu_host_joins_a_gloo_group_without_touching_cuda(gpu_host, monkeypatch):
    monkeypatch.setattr(
        comm, "_LOCAL_PROCESS_GROUP", None
    )  # detectron2's per-machine group: reset afterwards
    launch_mod.check_device("cpu", 2)  # more processes than GPUs is fine on the CPU
    seen = []
    # what each spawned process of `--num-gpus N` runs, here as the only rank of a group of 1
    launch_mod._spawned_worker(
        0,
        lambda: seen.append(dist.get_backend()),
        (),
        launch_mod.backend_for_device("cpu"),
        f"tcp://127.0.0.1:{free_port()}",
        1,
        1,
        0,
        launch_mod.DEFAULT_TIMEOUT,
    )
    assert seen == ["gloo"]
    assert not dist.is_initialized()  # the worker leaves no group behind


def test_cuda_config_needs_as_many_gpus_as_processes(gpu_host):
    launch_mod.check_device("cuda", 1)
    with pytest.raises(RuntimeError, match=r"--num-gpus 2 .*1 visible GPU.*MODEL.DEVICE cpu"):
        launch_mod.check_device("cuda", 2)


def test_cuda_config_without_a_gpu_stops_before_spawning(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        RuntimeError, match=r"MODEL.DEVICE is 'cuda' but no GPU is visible.*MODEL.DEVICE cpu"
    ):
        launch_mod.launch(lambda: None, device="cuda", processes_per_machine=2)
