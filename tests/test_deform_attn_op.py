"""Mask2Former's deformable attention: the compiled op of the official release when it is
installed and the values are on a GPU, else the PyTorch path (deform_attn_op.py).

Here (no GPU, no extension) the PyTorch path runs and says so once in the log; the comparison of
the two paths is skipped unless both the extension and CUDA are present.
"""

import logging

import pytest
import torch

from gmmseg.modeling.mask_former import deform_attn_op
from gmmseg.modeling.mask_former.pixel_decoder import ms_deform_attn_sample

SHAPES = [(4, 6), (2, 3)]


def _inputs(device="cpu", b=2, lq=5, nh=2, dh=4, npts=3):
    g = torch.Generator().manual_seed(0)
    s = sum(h * w for h, w in SHAPES)
    value = torch.randn(b, s, nh, dh, generator=g)
    loc = torch.rand(b, lq, nh, len(SHAPES), npts, 2, generator=g)
    w = torch.rand(b, lq, nh, len(SHAPES), npts, generator=g)
    return [t.to(device) for t in (value, loc, w / w.sum((-1, -2), keepdim=True))]


def test_cpu_values_take_the_pytorch_path_and_log_it_once(caplog, monkeypatch):
    monkeypatch.setattr(deform_attn_op, "_logged", set())
    value, loc, w = _inputs()
    assert not deform_attn_op.uses_compiled_op(value)
    with caplog.at_level(logging.INFO, logger=deform_attn_op.__name__):
        out = deform_attn_op.deform_attn(value, SHAPES, loc, w, ms_deform_attn_sample)
        deform_attn_op.deform_attn(value, SHAPES, loc, w, ms_deform_attn_sample)
    assert torch.equal(out, ms_deform_attn_sample(value, SHAPES, loc, w))
    lines = [r.getMessage() for r in caplog.records if "deformable attention" in r.getMessage()]
    assert len(lines) == 1 and "PyTorch" in lines[0]


def test_a_missing_extension_is_looked_up_once_and_reported_as_none(monkeypatch):
    calls = []

    def fake_import(name):
        calls.append(name)
        raise ImportError(name)

    monkeypatch.setattr(deform_attn_op, "_op", ...)
    monkeypatch.setattr(deform_attn_op.importlib, "import_module", fake_import)
    assert deform_attn_op.compiled_op() is None and deform_attn_op.compiled_op() is None
    assert calls == ["MultiScaleDeformableAttention"]


@pytest.mark.gpu
def test_compiled_op_matches_the_pytorch_path():
    pytest.importorskip("MultiScaleDeformableAttention")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    value, loc, w = (t.requires_grad_() for t in _inputs("cuda"))
    assert deform_attn_op.uses_compiled_op(value)
    out = deform_attn_op.deform_attn(value, SHAPES, loc, w, ms_deform_attn_sample)
    ref = ms_deform_attn_sample(value, SHAPES, loc, w)
    assert torch.allclose(out, ref, atol=1e-5)
    g1 = torch.autograd.grad(out.sum(), (value, loc, w))
    g2 = torch.autograd.grad(ref.sum(), (value, loc, w))
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-4)
