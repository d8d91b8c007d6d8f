"""gmm_fit's per-image sums with labels on another device than the log-likelihoods (the labels
are made on the CPU, the model's outputs live on the GPU in any CUDA config).

No GPU here: FakeTensorMode makes tensors that claim to be on "cuda" without allocating anything
and raises, as CUDA does, when an operation mixes devices. The numbers are checked on the CPU
against sums worked out by hand.
"""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from gmmseg.analysis.gmm_fit import anomaly_pixel_sums, known_pixel_sums

IGN = 255
# (h, w, K) = (2, 2, 3) class log-likelihoods
LL = torch.tensor(
    [[[-1.0, -2.0, -3.0], [-4.0, -0.5, -6.0]], [[-7.0, -8.0, -0.25], [-1.5, -9.0, -2.5]]]
)


def test_known_pixel_sums_by_hand():
    labels = torch.tensor([[1, 1], [IGN, 2]])
    own, best, n = known_pixel_sums(LL, labels, IGN).tolist()
    # pixels (0,0) class 1: -2, best -1; (0,1) class 1: -0.5, best -0.5; (1,1) class 2: -2.5, best -1.5
    assert (own, best, n) == (-5.0, -3.0, 3.0)


def test_anomaly_pixel_sums_by_hand():
    mask = torch.tensor([[1, 0], [255, 1]])
    assert anomaly_pixel_sums(LL, mask).tolist() == [-1.0 - 1.5, 2.0, -0.5, 1.0]


def _fake_cuda_run(fn, labels):
    with FakeTensorMode(allow_non_fake_inputs=True):
        ll = torch.empty(2, 2, 3, device="cuda")
        out = fn(ll, labels)
    return out.device


@pytest.mark.parametrize(
    "fn, labels",
    [
        (lambda ll, y: known_pixel_sums(ll, y, IGN), torch.tensor([[1, 1], [IGN, 2]])),
        (anomaly_pixel_sums, torch.tensor([[1, 0], [255, 1]])),
    ],
)
def test_labels_on_the_cpu_with_log_likelihoods_on_cuda(fn, labels):
    assert _fake_cuda_run(fn, labels).type == "cuda"


def test_the_fake_cuda_check_catches_mixed_devices():
    # what the check guards against: the pre-fix indexing of CUDA values by CPU labels
    with pytest.raises(Exception, match="device"):
        _fake_cuda_run(lambda ll, y: ll.gather(-1, y[..., None]), torch.tensor([[1, 1], [0, 2]]))


def test_an_image_without_labelled_pixels_adds_nothing():
    assert known_pixel_sums(LL, torch.full((2, 2), IGN), IGN).tolist() == [0.0, 0.0, 0.0]
