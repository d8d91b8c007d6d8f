"""Starting the training processes with the distributed backend of the device the model runs on.

detectron2's launch() chooses NCCL whenever `torch.cuda.is_available()`, whatever MODEL.DEVICE
says: a CPU config (MODEL.DEVICE "cpu") started with `--num-gpus 2` on a machine that has a GPU
would get NCCL with CPU tensors, and with more processes than GPUs it stops on a bare assert.
Here the backend follows MODEL.DEVICE:

    MODEL.DEVICE "cpu"   -> GLOO; no GPU is touched, whether the machine has one or not
    MODEL.DEVICE "cuda"  -> NCCL; process i of a machine uses GPU i (torch.cuda.set_device)

A CUDA config on a machine without a visible GPU, or with fewer visible GPUs than processes per
machine, stops before anything is spawned with a message naming MODEL.DEVICE and both counts.

Two ways in: `launch()` (spawns the processes of one machine, as detectron2's launch does) and
`main_from_torchrun()` (the processes were started by torchrun; environment-variable init).
"""

import logging
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.utils import comm

__all__ = ["backend_for_device", "check_device", "launch", "main_from_torchrun", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = timedelta(minutes=30)
_BACKENDS = {"cpu": "gloo", "cuda": "nccl"}

logger = logging.getLogger(__name__)


def _device_type(device: str) -> str:
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"MODEL.DEVICE {device!r} is not a torch device ({e})") from e


def backend_for_device(device: str) -> str:
    """The torch.distributed backend for MODEL.DEVICE: "gloo" for CPU, "nccl" for CUDA."""
    kind = _device_type(device)
    if kind not in _BACKENDS:
        raise ValueError(
            f"MODEL.DEVICE {device!r}: several processes can train on 'cpu' (GLOO) or 'cuda' (NCCL), not on {kind!r}"
        )
    return _BACKENDS[kind]


def check_device(device: str, processes_per_machine: int) -> None:
    """Stop with a clear message when MODEL.DEVICE asks for GPUs this machine cannot give."""
    if _device_type(device) != "cuda":
        return
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"MODEL.DEVICE is {device!r} but no GPU is visible (torch.cuda.is_available() is False). "
            f"Train on the CPU with the override MODEL.DEVICE cpu, or check CUDA_VISIBLE_DEVICES and the driver."
        )
    visible = torch.cuda.device_count()
    if processes_per_machine > visible:
        raise RuntimeError(
            f"--num-gpus {processes_per_machine} with MODEL.DEVICE {device!r}: one GPU per process is "
            f"needed but this machine has {visible} visible GPU(s). Use --num-gpus {visible}, or "
            f"MODEL.DEVICE cpu to run {processes_per_machine} CPU processes (GLOO)."
        )


def _free_local_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _join_group(
    backend: str,
    init_method: str,
    world_size: int,
    rank: int,
    processes_per_machine: int,
    local_rank: int,
    timeout: timedelta,
) -> None:
    """init_process_group + detectron2's per-machine group (+ this process's GPU for NCCL)."""
    try:
        dist.init_process_group(
            backend=backend,
            init_method=init_method,
            world_size=world_size,
            rank=rank,
            timeout=timeout,
        )
    except Exception:
        logger.error(
            "could not join the process group at %s (backend %s, rank %d of %d)",
            init_method,
            backend,
            rank,
            world_size,
        )
        raise
    comm.create_local_process_group(processes_per_machine)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    comm.synchronize()  # every rank has joined before training starts


def _spawned_worker(
    local_rank,
    main_func,
    args,
    backend,
    dist_url,
    world_size,
    processes_per_machine,
    machine_rank,
    timeout,
):
    rank = machine_rank * processes_per_machine + local_rank
    _join_group(backend, dist_url, world_size, rank, processes_per_machine, local_rank, timeout)
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def launch(
    main_func,
    args=(),
    *,
    device: str,
    processes_per_machine: int = 1,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    timeout: timedelta = DEFAULT_TIMEOUT,
):
    """Run main_func(*args) in processes_per_machine processes on this machine (one process:
    in this one, without a process group), with the backend of `device` (MODEL.DEVICE).

    dist_url: "tcp://HOST:PORT" of machine 0, or "auto" (one machine: a free local port).
    """
    check_device(device, processes_per_machine)
    backend = backend_for_device(device)
    world_size = num_machines * processes_per_machine
    if world_size == 1:
        return main_func(*args)
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError(
                "--dist-url auto only works on one machine; give machine 0's tcp://HOST:PORT"
            )
        dist_url = _free_local_url()
    mp.start_processes(
        _spawned_worker,
        nprocs=processes_per_machine,
        daemon=False,
        args=(
            main_func,
            args,
            backend,
            dist_url,
            world_size,
            processes_per_machine,
            machine_rank,
            timeout,
        ),
    )


def main_from_torchrun(main_fn, args, device: str, timeout_minutes: int = 30):
    """Join the process group described by torchrun's RANK / WORLD_SIZE / LOCAL_RANK /
    LOCAL_WORLD_SIZE / MASTER_* variables with the backend of `device`, then run main_fn(args)."""
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    check_device(device, local_world_size)
    _join_group(
        backend_for_device(device),
        "env://",
        int(os.environ["WORLD_SIZE"]),
        int(os.environ["RANK"]),
        local_world_size,
        int(os.environ["LOCAL_RANK"]),
        timedelta(minutes=timeout_minutes),
    )
    try:
        return main_fn(args)
    finally:
        dist.destroy_process_group()
