"""Mask2Former export: a checkpoint saved by detectron2's checkpointer loads into the official
Mask2Former without its MaskFormerHead renaming the pixel decoder away.

The official `MaskFormerHead._load_from_state_dict` (Mask2Former's
mask2former/modeling/meta_arch/mask_former_head.py) reads the checkpoint's state-dict metadata of
the head (`state_dict._metadata["sem_seg_head"]["version"]`, which torch writes from the module's
`_version`); when the version is missing or < 2 it rewrites every `sem_seg_head.*` key that does
not start with `sem_seg_head.predictor` to `sem_seg_head.pixel_decoder.*` (the layout of its
version-1 checkpoints). The project's head must therefore save version 2. The rule is written
below from that description (`official_head_rule`), not copied.
"""

import copy
import os
from collections import OrderedDict

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from gmmseg import add_gmmseg_config
from gmmseg.checkpoint import GMMSegCheckpointer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAD = "sem_seg_head"
CONFIGS = {
    "softmax": "configs/demo/mask2former_r18_softmax.yaml",
    "gmm": "configs/demo/mask2former_r18_gmm.yaml",
}


def official_head_version(local_metadata):
    return local_metadata.get("version", None) if local_metadata else None


def official_head_rule(state_dict, local_metadata, prefix=HEAD + "."):
    """The official MaskFormerHead's load-time rule, in place on `state_dict` (as the official
    `_load_from_state_dict` does on the dict it receives). Returns {old key: new key}."""
    version = official_head_version(local_metadata)
    renamed = {}
    if version is None or version < 2:
        for k in list(state_dict.keys()):
            if k.startswith(prefix) and not k.startswith(prefix + "predictor"):
                new = prefix + "pixel_decoder." + k[len(prefix) :]
                state_dict[new] = state_dict.pop(k)
                renamed[k] = new
    return renamed


def _model(variant, seed):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, CONFIGS[variant]))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def _as_official_head(model):
    """Give `model.sem_seg_head` the official load-time rule (the rest of loading is torch's own),
    so that loading `model` behaves like loading the official Mask2Former."""
    head = model.sem_seg_head
    original = head._load_from_state_dict
    log = {}

    def _load_from_state_dict(
        state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    ):
        log["version"] = official_head_version(local_metadata)
        log["renamed"] = official_head_rule(state_dict, local_metadata, prefix)
        return original(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    head._load_from_state_dict = _load_from_state_dict
    return log


def _small_input():
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.rand(3, 64, 96, generator=g) * 255, "height": 64, "width": 96}]


def _outputs(model):
    with torch.no_grad():
        return model(_small_input())[0]


@pytest.fixture(scope="module", params=["softmax", "gmm"])
def exported(request, tmp_path_factory):
    """(variant, trained-looking model, path of the file the project's checkpointer saved)."""
    model = _model(request.param, seed=0)
    with torch.no_grad():  # move every floating tensor away from its initial value
        g = torch.Generator().manual_seed(2)
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.01 * torch.randn(t.shape, generator=g))
    out = tmp_path_factory.mktemp(f"export_{request.param}")
    GMMSegCheckpointer(model, save_dir=str(out)).save("model_export")
    return request.param, model, str(out / "model_export.pth")


def test_saved_metadata_gives_the_head_version_2(exported):
    _, model, path = exported
    assert type(model.sem_seg_head)._version == 2
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    meta = getattr(state, "_metadata", None)
    assert meta is not None, "the saved state dict lost its _metadata"
    assert meta[HEAD]["version"] == 2
    # the official rule keeps every key of this file
    keys_before = list(state.keys())
    assert official_head_rule(state, meta[HEAD]) == {}
    assert list(state.keys()) == keys_before
    assert any(k.startswith(HEAD + ".pixel_decoder.") for k in keys_before)
    assert any(k.startswith(HEAD + ".predictor.") for k in keys_before)


def test_round_trip_into_an_official_head_gives_identical_tensors_and_outputs(exported):
    variant, model, path = exported
    ref_state, ref_out = model.state_dict(), _outputs(model)

    # (a) the file's state dict, the rule applied as a dict operation, strict load
    fresh = _model(variant, seed=1)
    assert not torch.equal(
        fresh.state_dict()[HEAD + ".pixel_decoder.mask_features.weight"],
        ref_state[HEAD + ".pixel_decoder.mask_features.weight"],
    )
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    official_head_rule(state, state._metadata[HEAD])
    result = fresh.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    _assert_same_model(fresh, ref_state, ref_out)

    # (b) a model whose head applies the rule at load time (where the official one does),
    # loaded by detectron2's DetectionCheckpointer as official Mask2Former loads MODEL.WEIGHTS
    fresh = _model(variant, seed=1)
    log = _as_official_head(fresh)
    DetectionCheckpointer(fresh).load(path)
    assert log == {"version": 2, "renamed": {}}
    _assert_same_model(fresh, ref_state, ref_out)


def _assert_same_model(model, ref_state, ref_out):
    state = model.state_dict()
    assert state.keys() == ref_state.keys()
    different = [k for k in ref_state if not torch.equal(state[k], ref_state[k])]
    assert not different, f"tensors that differ after the round trip: {different[:10]}"
    out = _outputs(model)
    assert out.keys() == ref_out.keys()
    for k in ref_out:
        if k == "anomaly_scores":
            assert all(torch.equal(out[k][n], ref_out[k][n]) for n in ref_out[k]), k
        else:
            assert torch.equal(out[k], ref_out[k]), k


@pytest.mark.parametrize("metadata", ["version 1", "no metadata"])
def test_the_rule_corrupts_a_version_1_export(exported, metadata):
    """What `_version = 2` prevents: with version 1 (nn.Module's default) or without metadata (e.g.
    a state dict rebuilt by a dict comprehension) every pixel-decoder key is renamed to
    pixel_decoder.pixel_decoder.*, so the official model leaves its pixel decoder random."""
    variant, model, path = exported
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    if metadata == "version 1":
        state._metadata = copy.deepcopy(state._metadata)
        state._metadata[HEAD]["version"] = 1
    else:
        state = OrderedDict(state.items())  # a new dict: no _metadata
        assert not hasattr(state, "_metadata")
    decoder_keys = [k for k in state if k.startswith(HEAD + ".pixel_decoder.")]
    renamed = official_head_rule(copy.copy(state), getattr(state, "_metadata", {}).get(HEAD))
    assert set(renamed) == set(decoder_keys) and decoder_keys
    assert all(
        v == HEAD + ".pixel_decoder.pixel_decoder." + k[len(HEAD + ".pixel_decoder.") :]
        for k, v in renamed.items()
    )

    fresh = _model(variant, seed=1)
    log = _as_official_head(fresh)
    with pytest.raises(RuntimeError, match="pixel_decoder.pixel_decoder"):
        fresh.load_state_dict(state, strict=True)
    assert log["version"] == (1 if metadata == "version 1" else None)
    fresh = _model(variant, seed=1)
    _as_official_head(fresh)
    fresh.load_state_dict(state, strict=False)
    loaded = [
        k
        for k in decoder_keys
        if state[k].is_floating_point() and torch.equal(fresh.state_dict()[k], state[k])
    ]
    assert not loaded, (
        f"pixel-decoder tensors that a version-1 file should have left at their initial values: {loaded}"
    )
    assert torch.equal(
        fresh.state_dict()[HEAD + ".predictor.query_feat.weight"],
        state[HEAD + ".predictor.query_feat.weight"],
    )  # the predictor still loads
