"""Small helpers shared by the tests (fixtures are in conftest.py)."""

import socket

import torch

PLAIN = (torch.Tensor, int, float, str, bool, type(None))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for --dist-url / init_method)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_plain(obj, path="checkpoint"):
    """Assert `obj` holds only tensors, numbers, strings and plain containers (what
    torch.load(weights_only=True) accepts), naming the first offending path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int)), f"{path}: key {k!r}"
            assert_plain(v, f"{path}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            assert_plain(v, f"{path}/{i}")
    else:
        assert isinstance(obj, PLAIN), f"{path}: {type(obj)}"


def run_ranks(fn, world, args=(), backend="gloo"):
    """Spawn `world` processes that join one process group (`backend`, on 127.0.0.1; under
    NCCL process r uses cuda:r) and call fn(rank, *args); they leave the group after it."""
    import torch.multiprocessing as mp

    mp.start_processes(
        _join_and_run,
        args=(fn, world, free_port(), backend, tuple(args)),
        nprocs=world,
        start_method="spawn",
    )


def _join_and_run(rank, fn, world, port, backend, args):
    import torch.distributed as dist

    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()
