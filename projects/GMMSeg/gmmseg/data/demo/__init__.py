"""The built-in demo dataset: procedurally generated street scenes, deterministic from a seed.

By role: scene.py renders one scene (image, label, anomaly mask); files.py writes the dataset
folder; registration.py registers and loads its splits; __main__.py is the command line.

Six classes (sky, road, building with two unrelated appearances, tree, car, person), varied
lighting and noise, and an anomaly split with objects no training image has: scene.py says how.

Layout under `<root>/gmmseg_demo/` (root: argument, else $DETECTRON2_DATASETS, else ./datasets):

    {train,val,anomaly}/images/NNNN.png     96 x 128 RGB
    {train,val,anomaly}/labels/NNNN.png     uint8 class ids, 255 = void
    anomaly/anomaly_masks/NNNN.png          1 = anomaly, 0 = known class, 255 = void
    generation.json                         seed, sizes and generator version

The folder is written once: generation goes to a hidden temporary folder that is renamed into
place when complete, so an interrupted run is never mistaken for a complete dataset. Image i of a
split depends only on (seed, split, i), so a larger split extends a smaller one.

Generate from the command line with `python -m gmmseg.data.demo [--root R] [--seed S]`.
"""

from .files import DEMO_DEFAULT_SIZES, DEMO_DIRNAME, generate_demo_dataset
from .registration import load_demo_split, register_demo_datasets
from .scene import ANOMALY_SPLITS, APPEARANCES, DEMO_CLASSES, DEMO_COLORS, DEMO_SPLITS, render_scene

__all__ = [
    "DEMO_CLASSES",
    "DEMO_COLORS",
    "DEMO_SPLITS",
    "ANOMALY_SPLITS",
    "DEMO_DEFAULT_SIZES",
    "DEMO_DIRNAME",
    "APPEARANCES",
    "render_scene",
    "generate_demo_dataset",
    "load_demo_split",
    "register_demo_datasets",
]
