"""The EM-module protocol (gmm/em_module.py): how the trainer, DDP's setup and the checkpointer find
the EM-trained heads and their state, the memory layout read in one place (gmm/memory_layout.py),
and the config key of each tensor dimension (modeling/predictors.py DIMENSION_KEYS)."""

import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from gmmseg import add_gmmseg_config
from gmmseg.checkpoint import check_state_dict_matches_model
from gmmseg.engine.trainer import memory_buffer_names
from gmmseg.gmm import (
    EMModule,
    FeatureMemory,
    InferenceMemory,
    ShardedFeatureMemory,
    build_memory,
    em_modules,
    named_em_modules,
)
from gmmseg.gmm.protoseg import ProtoSegPredictor
from gmmseg.modeling.predictors import SoftmaxPredictor, build_predictor, tensor_setting_keys


def _cfg(name, **keys):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.MODEL.PREDICTOR.NAME = name
    cfg.merge_from_list([item for pair in keys.items() for item in pair])
    return cfg


def _gmm(**keys):
    keys = {
        "MODEL.GMM.EMBED_DIM": 8,
        "MODEL.GMM.NUM_COMPONENTS": 3,
        "MODEL.GMM.MEMORY_SIZE": 6,
        **keys,
    }
    return build_predictor(_cfg("gmm", **keys), 16, 4)


class _TwoHeads(nn.Module):
    """A model with a GMM, a softmax twin and a ProtoSeg head, as submodules at two depths."""

    def __init__(self):
        super().__init__()
        self.head = nn.Module()
        self.head.predictor = _gmm()
        self.twin = SoftmaxPredictor(16, 4)
        self.proto = ProtoSegPredictor(16, 4, embed_dim=8, num_prototypes=2)


def test_em_modules_are_found_by_type_in_a_fixed_order_and_skip_the_softmax_twin():
    model = _TwoHeads()
    assert named_em_modules(model) == [
        ("head.predictor", model.head.predictor),
        ("proto", model.proto),
    ]
    assert em_modules(model) == [model.head.predictor, model.proto]
    assert not isinstance(model.twin, EMModule)


def test_memory_buffer_names_are_the_gmm_banks_state_only():
    """What DDP must never broadcast: the GMM memory's buffers; not the means, not ProtoSeg's sums."""
    names = memory_buffer_names(_TwoHeads())
    assert sorted(names) == sorted(
        f"head.predictor.memory.{n}"
        for n in ("bank", "ptr", "filled", "stat_count", "stat_sum", "stat_sumsq")
    )


def test_replicated_state_holds_the_head_buffers_then_the_memory():
    p = _gmm(**{"MODEL.GMM.PROJECTION": "linear"})
    names = [n for n, _ in p.replicated_em_state(include_bank=False)]
    assert names[:7] == [
        "means",
        "num_em_updates",
        "received_data",
        "rows_pushed",
        "stds",
        "training_pixels",
        "updates_per_component",
    ]
    assert "memory.bank" not in names and "memory.ptr" in names
    assert "memory.bank" in [n for n, _ in p.replicated_em_state(include_bank=True)]
    proto = ProtoSegPredictor(16, 4, embed_dim=8, num_prototypes=2)
    assert [n for n, _ in proto.replicated_em_state()] == [
        "count_embeddings",
        "num_em_updates",
        "prototypes",
        "sum_embeddings",
    ]


def test_memory_layout_is_read_in_one_place():
    assert type(build_memory("auto", 3, 4, 2)) is FeatureMemory  # one process: replicated
    assert type(build_memory("replicated", 3, 4, 2)) is FeatureMemory
    assert type(build_memory("none", 3, 4, 2)) is InferenceMemory
    assert type(build_memory("sharded", 3, 0, 2)) is FeatureMemory  # capacity 0: no rows to spread
    sharded = build_memory("sharded", 3, 4, 2)
    assert type(sharded) is ShardedFeatureMemory and sharded.num_shards == 1
    with pytest.raises(ValueError, match="MODEL.GMM.MEMORY_LAYOUT.*'spread'"):
        build_memory("spread", 3, 4, 2)
    with pytest.raises(ValueError, match="MODEL.GMM.MEMORY_LAYOUT.*'spread'"):
        _gmm(**{"MODEL.GMM.MEMORY_LAYOUT": "spread"})


def test_a_gmm_built_for_inference_refuses_to_train():
    _gmm().check_trainable()  # a bank: fine
    ProtoSegPredictor(16, 4).check_trainable()  # no memory: fine
    with pytest.raises(RuntimeError, match="built for inference.*MEMORY_LAYOUT"):
        _gmm(**{"MODEL.GMM.MEMORY_LAYOUT": "none"}).check_trainable()


def test_every_named_dimension_fits_the_tensor_it_names():
    """tensor_dims has one entry per dimension, and the named sizes are the head's settings."""
    heads = (
        _gmm(),
        _gmm(**{"MODEL.GMM.PROJECTION": "linear"}),
        _gmm(**{"MODEL.GMM.DISCRIMINATIVE": True}),
        ProtoSegPredictor(16, 4, embed_dim=8, num_prototypes=3),
        SoftmaxPredictor(16, 4),
    )
    for head in heads:
        memory = head.feature_memory() if isinstance(head, EMModule) else None
        sizes = {
            "classes": 4,
            "components": 3,
            "groups": 12,
            "embed_dim": 8,
            "memory_size": memory.capacity if memory is not None else None,
        }
        tensors = {
            k: tuple(t.shape) for k, t in list(head.named_parameters()) + list(head.named_buffers())
        }
        if isinstance(head, EMModule):
            tensors.update(head.checkpoint_shapes())
        dims = head.tensor_dims()
        for name, names in dims.items():
            if name not in tensors:  # "stds" of a head that learns them by gradient ("std_param")
                continue
            assert len(names) == len(tensors[name]), name
            for size, dim in zip(tensors[name], names):
                assert dim is None or size == sizes[dim], (type(head).__name__, name, dim)
        if isinstance(head, EMModule):  # what a changed setting reshapes has its dimensions named
            assert {"class_norm.weight", "embed_norm.weight"} <= set(dims)
            assert {"means", "prototypes"} & set(dims)
            assert all(
                n in dims
                for n, shape in tensors.items()
                if shape and (n.startswith("memory.") or n.startswith("projection."))
            )


def test_setting_keys_name_each_predictors_own_keys():
    keys = tensor_setting_keys(_TwoHeads())
    assert keys["head.predictor.memory.bank"] == (
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES x MODEL.GMM.NUM_COMPONENTS",
        "MODEL.GMM.MEMORY_SIZE",
        "MODEL.GMM.EMBED_DIM",
    )
    assert keys["head.predictor.means"] == (
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        "MODEL.GMM.NUM_COMPONENTS",
        "MODEL.GMM.EMBED_DIM",
    )
    assert keys["head.predictor.projection.conv.weight"] == ("MODEL.GMM.EMBED_DIM", None)
    assert keys["proto.prototypes"] == (
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        "MODEL.PROTOSEG.NUM_PROTOTYPES",
        "MODEL.PROTOSEG.EMBED_DIM",
    )
    assert keys["twin.linear.weight"] == ("MODEL.SEM_SEG_HEAD.NUM_CLASSES", None)


def test_a_protoseg_checkpoint_of_another_shape_names_its_keys():
    cfg = _cfg("protoseg", **{"MODEL.PROTOSEG.NUM_PROTOTYPES": 5, "MODEL.PROTOSEG.EMBED_DIM": 8})
    saved = build_predictor(cfg, 16, 4).state_dict()
    cfg.MODEL.PROTOSEG.NUM_PROTOTYPES = 2
    with pytest.raises(ValueError) as info:
        check_state_dict_matches_model(saved, build_predictor(cfg, 16, 4), "p.pth")
    msg = str(info.value)
    assert "MODEL.PROTOSEG.NUM_PROTOTYPES: checkpoint 5, config 2" in msg
    assert "prototypes: checkpoint (4, 5, 8) vs model (4, 2, 8)" in msg
    assert (
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES x MODEL.PROTOSEG.NUM_PROTOTYPES: checkpoint 20, config 8"
        in msg
    )
    assert "MODEL.GMM" not in msg


def test_both_heads_share_one_forward():
    """EMModule.forward: class scores are the best component's score, logits their LayerNorm over
    classes; labels are checked for both heads with the head's name."""
    torch.manual_seed(0)
    x = torch.randn(5, 16)
    for head in (_gmm(), ProtoSegPredictor(16, 4, embed_dim=8, num_prototypes=3)):
        head.eval()
        out = head(x)
        scores = head.component_scores(head.embed(x))
        torch.testing.assert_close(out["log_likelihood"], scores.max(-1).values)
        mu, var = (
            scores.max(-1).values.mean(1, keepdim=True),
            scores.max(-1).values.var(1, unbiased=False, keepdim=True),
        )
        torch.testing.assert_close(
            out["logits"], (scores.max(-1).values - mu) / torch.sqrt(var + 1e-5)
        )
        head.train()
        with pytest.raises(ValueError, match=f"{type(head).__name__} got label value 4"):
            head(x, torch.tensor([0, 1, 4, 255, 2]))
