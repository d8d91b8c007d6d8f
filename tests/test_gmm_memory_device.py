"""The GMM bank is allocated and filled on its target device (MODEL.DEVICE): a GPU run never holds
a whole random bank in host memory, only one slice of it at a time.

No GPU here: the "meta" device stands for it (tensors without storage), and the growth of the
process's peak resident memory while a bank is built there is measured in a fresh process.
"""

import multiprocessing

import torch

from gmmseg.gmm import FeatureMemory, GMMPredictor, ShardedFeatureMemory
from gmmseg.modeling.predictors import memory_device

G, CAPACITY, D = 30, 16000, 64  # 123 MB in float32


def test_bank_on_the_device_has_the_values_of_the_cpu_bank():
    cpu = FeatureMemory(6, 50, 8, init="random", seed=3)
    other = FeatureMemory(6, 50, 8, init="random", seed=3, device="cpu")
    assert torch.equal(cpu.bank, other.bank) and torch.equal(cpu.stat_sum, other.stat_sum)
    meta = FeatureMemory(6, 50, 8, init="random", seed=3, device="meta")
    assert {b.device.type for b in meta.buffers()} == {"meta"}


def test_predictor_and_sharded_memory_take_the_device():
    p = GMMPredictor(
        4,
        3,
        embed_dim=8,
        num_components=2,
        memory_size=10,
        memory_init="random",
        memory_device="meta",
    )
    assert p.memory.bank.device.type == "meta" and p.means.device.type == "cpu"
    s = ShardedFeatureMemory(6, 10, 8, init="random", shard_rank=1, num_shards=2, device="meta")
    assert {b.device.type for b in s.buffers()} == {"meta"}


def test_memory_device_follows_model_device():
    assert memory_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():  # a config for a GPU, inspected on a machine without one
        assert memory_device("cuda") == torch.device("cpu")


def _peak_growth(out):
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    FeatureMemory._CHUNK_ELEMENTS = 1 << 20  # 4 MB slices
    before = status("VmRSS:")
    m = FeatureMemory(G, CAPACITY, D, init="random", seed=1, device="meta")
    grown = status("VmHWM:") - before
    before = status("VmHWM:")
    FeatureMemory(G, CAPACITY, D, init="random", seed=1)  # the control: a bank on the CPU is seen
    control = status("VmHWM:") - before
    torch.save({"grown": grown, "control": control, "meta": m.bank.device.type == "meta"}, out)


def test_building_a_random_bank_on_the_device_holds_only_a_slice_in_host_memory(tmp_path):
    out = tmp_path / "measured.pt"
    child = multiprocessing.get_context("spawn").Process(target=_peak_growth, args=(str(out),))
    child.start()
    child.join()
    assert child.exitcode == 0
    r = torch.load(out, weights_only=True)
    bank_bytes = G * CAPACITY * D * 4
    assert r["meta"] and r["grown"] < bank_bytes / 2, f"host peak grew by {r['grown'] / 1e6:.0f} MB"
    assert r["control"] > bank_bytes * 0.8
