"""The built-in demo dataset: procedurally generated street scenes, deterministic from a seed.

By role: scene.py renders one scene (image, label, anomaly mask); files.py writes the dataset
folder; registration.py registers and loads its splits; __main__.py is the command line.

Six classes: sky, road, building, tree, car, person. "building" has two appearances that share
no colour or texture (red brick with mortar joints and dark windows vs a blue glass curtain wall
with a frame grid), so one Gaussian per class cannot model it. Every image also varies in
lighting (gain, colour cast, left-right gradient), sensor noise and blur; some show the ego
vehicle's bonnet at the bottom, which is labelled void (255).

The anomaly split renders scenes like the val split and pastes 1-3 objects whose appearance no
training image has (saturated magenta / lime / cyan checkerboards and stripes in geometric
shapes). Their pixels are 255 in the semantic label and 1 in the anomaly mask.

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
from .scene import APPEARANCES, DEMO_CLASSES, DEMO_COLORS, DEMO_SPLITS, render_scene

__all__ = [
    "DEMO_CLASSES",
    "DEMO_COLORS",
    "DEMO_SPLITS",
    "DEMO_DEFAULT_SIZES",
    "DEMO_DIRNAME",
    "APPEARANCES",
    "render_scene",
    "generate_demo_dataset",
    "load_demo_split",
    "register_demo_datasets",
]
