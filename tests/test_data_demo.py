"""The built-in demo dataset: determinism, content, atomic generation, registration."""

import functools
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T

from gmmseg.data import demo
from gmmseg.data.demo import files, scene
from gmmseg.data.mapper import SemSegDatasetMapper

SIZES = {"train": 6, "val": 3, "anomaly": 5, "near": 4}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    demo.generate_demo_dataset(root, seed=0, sizes=SIZES)
    return root


@pytest.fixture
def restore_registration():
    yield
    demo.register_demo_datasets()  # back to the import-time registration


def _files(folder):
    out = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            path = os.path.join(dirpath, n)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _read(path, flags=cv2.IMREAD_UNCHANGED):
    arr = cv2.imread(path, flags)
    assert arr is not None, path
    return arr


def test_same_seed_same_bytes_and_split_prefix_stable(demo_root, tmp_path):
    a = _files(os.path.join(demo_root, "gmmseg_demo"))
    assert (
        len(a) == 2 * sum(SIZES.values()) + SIZES["anomaly"] + SIZES["near"] + 1
    )  # + anomaly masks + marker
    demo.generate_demo_dataset(str(tmp_path / "b"), seed=0, sizes=SIZES)
    assert _files(str(tmp_path / "b" / "gmmseg_demo")) == a
    # image i depends on (seed, split, i) only: a smaller split is a prefix of a larger one
    demo.generate_demo_dataset(
        str(tmp_path / "c"), seed=0, sizes={"train": 2, "val": 1, "anomaly": 1, "near": 1}
    )
    c = _files(str(tmp_path / "c" / "gmmseg_demo"))
    for name, data in c.items():
        if name != "generation.json":
            assert a[name] == data, name
    # another seed gives other images
    demo.generate_demo_dataset(
        str(tmp_path / "d"), seed=1, sizes={"train": 2, "val": 1, "anomaly": 1, "near": 1}
    )
    d = _files(str(tmp_path / "d" / "gmmseg_demo"))
    assert d["train/images/0000.png"] != a["train/images/0000.png"]


def test_layout_sizes_and_label_values(demo_root):
    base = os.path.join(demo_root, "gmmseg_demo")
    for split, n in SIZES.items():
        images = sorted(os.listdir(os.path.join(base, split, "images")))
        assert images == [f"{i:04d}.png" for i in range(n)]
        for name in images:
            img = _read(os.path.join(base, split, "images", name), cv2.IMREAD_COLOR)
            label = _read(os.path.join(base, split, "labels", name))
            assert (
                img.shape == (96, 128, 3) and label.shape == (96, 128) and label.dtype == np.uint8
            )
            assert set(np.unique(label)) <= set(range(6)) | {255}
            assert len(set(np.unique(label)) - {255}) >= 2  # a scene, not a blank image


def test_anomaly_masks_consistent_with_labels(demo_root):
    base = os.path.join(demo_root, "gmmseg_demo", "anomaly")
    for i in range(SIZES["anomaly"]):
        label = _read(os.path.join(base, "labels", f"{i:04d}.png"))
        mask = _read(os.path.join(base, "anomaly_masks", f"{i:04d}.png"))
        assert set(np.unique(mask)) <= {0, 1, 255}
        assert (mask == 1).sum() > 20  # every image has a visible anomaly
        assert np.all(label[mask == 1] == 255)  # anomalies are void in the semantic label
        assert np.all(label[mask == 255] == 255)  # void stays void
        assert np.all(label[mask == 0] < 6)  # known pixels carry a class
    # the training split has no anomaly-like void: void only where the ego bonnet is (bottom rows)
    for i in range(SIZES["train"]):
        label = _read(os.path.join(demo_root, "gmmseg_demo", "train", "labels", f"{i:04d}.png"))
        rows = np.nonzero((label == 255).any(1))[0]
        assert rows.size == 0 or rows.min() >= 96 - 14


@functools.lru_cache(maxsize=None)
def _scenes(split, n, anomalies=False, near=False):
    return [
        scene.render_scene(
            scene.scene_rng(0, split, i), with_anomalies=anomalies, near_anomalies=near
        )
        for i in range(n)
    ]


def test_building_has_two_clearly_different_appearances():
    scenes = _scenes("train", 24)
    brick = np.concatenate([s["image"][s["appearance"] == scene.A_BRICK] for s in scenes]).astype(
        float
    )
    glass = np.concatenate([s["image"][s["appearance"] == scene.A_GLASS] for s in scenes]).astype(
        float
    )
    assert len(brick) > 2000 and len(glass) > 2000
    for s in scenes:  # both are labelled "building"
        assert np.all(
            s["label"][np.isin(s["appearance"], [scene.A_BRICK, scene.A_GLASS])] == scene.BUILDING
        )
    mb, mg = brick.mean(0), glass.mean(0)
    assert np.linalg.norm(mb - mg) > 60, (mb, mg)
    assert mb[0] > mb[2] + 30 and mg[2] > mg[0] + 30  # red-dominant brick, blue-dominant glass
    # the two appearances overlap little: a nearest-mean rule separates their pixels
    correct = (np.linalg.norm(brick - mb, axis=1) < np.linalg.norm(brick - mg, axis=1)).mean()
    correct += (np.linalg.norm(glass - mg, axis=1) < np.linalg.norm(glass - mb, axis=1)).mean()
    assert correct / 2 > 0.85


def _novel_colour(img):
    """Saturated, bright magenta / lime / cyan: the anomaly palette."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV_FULL).astype(int)
    h, s, v = hsv[..., 0] * 360 // 256, hsv[..., 1], hsv[..., 2]
    hue = ((h > 280) & (h < 340)) | ((h > 95) & (h < 145)) | ((h > 165) & (h < 195))
    return (s > 200) & (v > 120) & hue


def test_anomaly_appearance_is_never_seen_in_training():
    train = _scenes("train", 24)
    seen = np.mean([_novel_colour(s["image"]).mean() for s in train])
    anomaly = _scenes("anomaly", 8, anomalies=True)
    novel = np.concatenate(
        [_novel_colour(s["image"])[s["appearance"] == scene.A_ANOMALY] for s in anomaly]
    )
    assert seen < 0.003, seen
    assert novel.mean() > 0.6, novel.mean()


def test_near_anomalies_are_an_unseen_category_in_the_street_s_colours():
    # near split: animals, labelled void and marked 1 in the anomaly mask, never in training; their
    # colours lie among the known pixels' (each fur pixel has a close training pixel in RGB), the
    # far split's do not
    near = _scenes("near", 8, near=True)
    for s in near:
        animal = s["appearance"] == scene.A_ANIMAL
        assert animal.sum() > 30
        assert np.array_equal(s["anomaly_mask"] == 1, animal)
        assert (s["label"][animal] == scene.IGNORE).all()
    train = _scenes("train", 24)
    assert not any((s["appearance"] == scene.A_ANIMAL).any() for s in train)
    known = np.concatenate([s["image"][s["label"] != scene.IGNORE] for s in train])[::97].astype(
        float
    )
    far = _scenes("anomaly", 8, anomalies=True)

    def median_distance_to_known(pixels):
        pixels = pixels[:: max(1, len(pixels) // 800)].astype(float)
        return np.median(np.sqrt(((pixels[:, None] - known[None]) ** 2).sum(-1)).min(1))

    fur = np.concatenate([s["image"][s["appearance"] == scene.A_ANIMAL] for s in near])
    pasted = np.concatenate([s["image"][s["appearance"] == scene.A_ANOMALY] for s in far])
    assert median_distance_to_known(fur) < 12 < 40 < median_distance_to_known(pasted)


def test_scenes_vary(demo_root):
    scenes = _scenes("train", 24)[:12]
    means = np.array([s["image"].reshape(-1, 3).mean(0) for s in scenes])
    assert means.std(0).min() > 5  # lighting / content differ between images
    counts = np.stack([np.bincount(s["label"].ravel(), minlength=256)[:6] for s in scenes])
    assert (counts > 0).all(0).sum() >= 2 and (counts > 0).any(
        0
    ).all()  # every class appears somewhere


def test_registration_dicts_and_metadata(demo_root, restore_registration):
    names = demo.register_demo_datasets(root=demo_root, seed=0, sizes=SIZES)
    assert names == [
        "gmmseg_demo_train",
        "gmmseg_demo_val",
        "gmmseg_demo_anomaly",
        "gmmseg_demo_near",
    ]
    for name, split in zip(names, demo.DEMO_SPLITS):
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == SIZES[split]
        d = dicts[0]
        keys = {"file_name", "sem_seg_file_name", "height", "width", "image_id"}
        keys |= {"anomaly_mask_file_name"} if split in ("anomaly", "near") else set()
        assert set(d) == keys
        assert (d["height"], d["width"]) == (96, 128)
        assert os.path.isfile(d["file_name"]) and os.path.isfile(d["sem_seg_file_name"])
        assert len({x["image_id"] for x in dicts}) == len(dicts)
        meta = MetadataCatalog.get(name)
        assert meta.stuff_classes == list(demo.DEMO_CLASSES) and len(meta.stuff_colors) == 6
        assert meta.ignore_label == 255 and meta.evaluator_type == "sem_seg"


def test_loader_generates_lazily_under_detectron2_datasets(
    tmp_path, monkeypatch, restore_registration
):
    demo.register_demo_datasets(
        sizes={"train": 2, "val": 1, "anomaly": 1, "near": 1}
    )  # root from the env, later
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert not (tmp_path / "gmmseg_demo").exists()
    dicts = DatasetCatalog.get("gmmseg_demo_val")
    assert len(dicts) == 1 and dicts[0]["file_name"].startswith(str(tmp_path))
    assert (tmp_path / "gmmseg_demo" / "generation.json").is_file()


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    real = files._write_split

    def dies_in_val(folder, split, seed, count):
        if split == "val":
            raise KeyboardInterrupt("killed")
        real(folder, split, seed, count)

    monkeypatch.setattr(files, "_write_split", dies_in_val)
    with pytest.raises(KeyboardInterrupt):
        demo.generate_demo_dataset(
            str(tmp_path), sizes={"train": 2, "val": 1, "anomaly": 1, "near": 1}
        )
    assert os.listdir(tmp_path) == []  # no final folder, temporary folder removed
    # a temporary folder of a process that died (no cleanup) is removed by the next generation
    stale = tmp_path / ".gmmseg_demo.tmp-999999999-abc"
    stale.mkdir()
    os.utime(stale, (0, 0))  # old enough to be stale
    recent = tmp_path / ".gmmseg_demo.tmp-999999998-abc"  # maybe another machine's: kept
    recent.mkdir()
    monkeypatch.setattr(files, "_write_split", real)
    demo.generate_demo_dataset(str(tmp_path), sizes={"train": 2, "val": 1, "anomaly": 1, "near": 1})
    assert sorted(os.listdir(tmp_path)) == [recent.name, "gmmseg_demo"]


def test_existing_folder_rules(tmp_path):
    small = {"train": 1, "val": 1, "anomaly": 1, "near": 1}
    (tmp_path / "gmmseg_demo").mkdir()
    with pytest.raises(FileExistsError, match="generation.json"):
        demo.generate_demo_dataset(str(tmp_path), sizes=small)
    (tmp_path / "gmmseg_demo").rmdir()
    folder = demo.generate_demo_dataset(str(tmp_path), seed=0, sizes=small)
    before = os.stat(os.path.join(folder, "train", "images", "0000.png")).st_mtime_ns
    assert demo.generate_demo_dataset(str(tmp_path), seed=0, sizes=small) == folder  # skipped
    assert os.stat(os.path.join(folder, "train", "images", "0000.png")).st_mtime_ns == before
    demo.generate_demo_dataset(str(tmp_path), seed=3, sizes=small)  # other seed: replaced
    assert '"seed": 3' in open(os.path.join(folder, "generation.json")).read()
    assert sorted(os.listdir(tmp_path)) == ["gmmseg_demo"]


def test_mapper_returns_anomaly_mask_for_anomaly_split(demo_root, restore_registration):
    demo.register_demo_datasets(root=demo_root, seed=0, sizes=SIZES)
    d = DatasetCatalog.get("gmmseg_demo_anomaly")[0]
    mapper = SemSegDatasetMapper(
        False, augmentations=[T.ResizeShortestEdge(192, 1000)], image_format="RGB", num_classes=6
    )
    out = mapper(d)
    assert out["image"].shape == (3, 192, 256)
    mask, sem = out["anomaly_mask"], out["sem_seg"]
    assert mask.shape == sem.shape == (192, 256) and mask.dtype == torch.long
    assert (mask == 1).any() and torch.all(sem[mask == 1] == 255) and torch.all(sem[mask == 0] < 6)
