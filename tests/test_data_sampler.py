"""Class-balanced sampler: index from label maps, cache, balance, determinism, rank sharding."""

import itertools
import os

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm
from PIL import Image

from gmmseg import add_gmmseg_config
from gmmseg.data import sampler as cbs

N, RARE = 30, (7, 21)  # class 2 appears only in images 7 and 21; class 3 nowhere


@pytest.fixture
def dicts(tmp_path):
    labels = tmp_path / "fake" / "train" / "labels"
    labels.mkdir(parents=True)
    out = []
    for i in range(N):
        label = np.zeros((8, 8), np.uint8)
        if i % 2 == 0:
            label[:4] = 1
        if i in RARE:
            label[0, 0] = 2
        label[7, 7] = 255
        path = labels / f"{i:03d}.png"
        Image.fromarray(label).save(path)
        out.append(
            {"file_name": str(path).replace("labels", "images"), "sem_seg_file_name": str(path)}
        )
    return out


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_index_from_label_maps(dicts):
    index = cbs.compute_class_image_index(dicts, num_classes=4)
    assert index[0] == list(range(N))
    assert index[1] == list(range(0, N, 2))
    assert index[2] == list(RARE) and index[3] == []
    assert cbs.compute_class_image_index(dicts, 4, min_pixels=2)[2] == []  # one pixel is not enough
    dicts[7]["label_remap"] = {2: 255}  # remaps are honoured (CamVid open set)
    assert cbs.compute_class_image_index(dicts, 4)[2] == [21]


def test_bad_label_value_stops_indexing(dicts):
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(dicts[3]["sem_seg_file_name"])
    with pytest.raises(ValueError, match=r"003.png.*\[9\]"):
        cbs.compute_class_image_index(dicts, 4)


def test_rare_class_images_sampled_far_more_often_than_uniform(dicts):
    index = cbs.compute_class_image_index(dicts, 4)
    draws = np.array(_take(cbs.ClassBalancedSampler(index, seed=0), 3000))
    uniform = np.array(_take(TrainingSampler(N, seed=0), 3000))
    rare = np.isin(draws, RARE).mean()
    assert np.isin(uniform, RARE).mean() < 0.1  # 2 of 30 images
    assert (
        0.3 < rare < 0.4
    )  # 3 classes with images, one of them only in the rare images: ~1/3 + 2/90
    assert set(draws.tolist()) == set(range(N))  # every image still appears
    assert draws.min() >= 0 and draws.max() < N


def test_seeded_and_sharded_like_training_sampler(dicts, monkeypatch):
    index = cbs.compute_class_image_index(dicts, 4)
    a = _take(cbs.ClassBalancedSampler(index, seed=5), 400)
    assert a == _take(cbs.ClassBalancedSampler(index, seed=5), 400)
    assert a != _take(cbs.ClassBalancedSampler(index, seed=6), 400)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    streams = []
    for rank in (0, 1):
        monkeypatch.setattr(comm, "get_rank", lambda r=rank: r)
        streams.append(_take(cbs.ClassBalancedSampler(index, seed=5), 200))
    assert streams[0] != streams[1]
    assert streams[0] == a[0::2] and streams[1] == a[1::2]


def test_index_cached_next_to_the_dataset_and_invalidated(dicts, monkeypatch):
    split_dir = os.path.dirname(os.path.dirname(dicts[0]["sem_seg_file_name"]))
    first = cbs.class_image_index(dicts, 4, dataset_name="fake_train")
    cached = [f for f in os.listdir(split_dir) if f.startswith("class_index_fake_train_")]
    assert len(cached) == 1 and cached[0].endswith(".json")

    def no_reading(*args, **kwargs):
        raise AssertionError("the index should have come from the cache")

    monkeypatch.setattr(cbs, "compute_class_image_index", no_reading)
    assert cbs.class_image_index(dicts, 4, dataset_name="fake_train") == first
    with pytest.raises(AssertionError):  # another file list is another key
        cbs.class_image_index(dicts[:-1], 4, dataset_name="fake_train")
    with pytest.raises(AssertionError):  # other classes count as another key too
        cbs.class_image_index(dicts, 5, dataset_name="fake_train")


def test_unwritable_cache_is_only_a_warning(dicts, tmp_path):
    missing_dir = str(tmp_path / "no" / "such" / "dir")
    index = cbs.class_image_index(dicts, 4, dataset_name="x", cache_dir=missing_dir)
    assert index[2] == list(RARE)


def test_build_from_config(dicts):
    cfg = get_cfg()
    add_gmmseg_config(cfg)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 4
    cfg.DATASETS.TRAIN = ("fake_train",)
    cfg.DATALOADER.SAMPLER_TRAIN = "ClassBalancedSampler"
    cfg.DATALOADER.CLASS_BALANCED.CACHE = False
    sampler = cbs.build_class_balanced_sampler(cfg, dicts)
    assert isinstance(sampler, cbs.ClassBalancedSampler)
    assert np.isin(_take(sampler, 600), RARE).mean() > 0.25
    split_dir = os.path.dirname(os.path.dirname(dicts[0]["sem_seg_file_name"]))
    assert not [f for f in os.listdir(split_dir) if f.startswith("class_index")]  # CACHE False
    with pytest.raises(ValueError, match="no class"):
        cbs.ClassBalancedSampler([[], []], seed=0)
