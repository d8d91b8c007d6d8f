"""One place for every config key: gmmseg/config.py adds them (add_gmmseg_config), and nothing else
in the package makes config nodes or `add_*_config` functions. The config module imports no code
of the package. The keys and renamed keys are what the yaml files of configs/ rely on
(tests/test_configs.py loads every one)."""

import ast
import glob
import os

import pytest
from detectron2.config import get_cfg

from gmmseg import add_gmmseg_config

PACKAGE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "projects", "GMMSeg", "gmmseg"
)


def _modules():
    for path in sorted(glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True)):
        yield (
            os.path.relpath(path, PACKAGE).replace(os.sep, "/"),
            ast.parse(open(path).read(), path),
        )


def test_config_nodes_and_adders_are_made_in_config_py_only():
    found = {}
    for rel, tree in _modules():
        if rel == "config.py":
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.FunctionDef)
                and node.name.startswith("add_")
                and node.name.endswith("_config")
            ):
                found.setdefault(rel, []).append(node.name)
            if isinstance(node, ast.ImportFrom) and node.module == "detectron2.config":
                if "CfgNode" in {a.name for a in node.names}:
                    found.setdefault(rel, []).append("imports CfgNode")
    assert found == {}


def test_config_py_imports_no_code_of_the_package():
    tree = dict(_modules())["config.py"]
    assert [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level] == []


def test_every_group_is_added():
    cfg = add_gmmseg_config(get_cfg())
    cfg.MODEL.GMM.EMBED_DIM = 7
    assert add_gmmseg_config(cfg).MODEL.GMM.EMBED_DIM == 7  # a second call changes nothing
    for key in (
        "MODEL.GMM.MEMORY_LAYOUT",
        "MODEL.PROTOSEG.NUM_PROTOTYPES",
        "MODEL.SEM_SEG_HEAD.LOSS_NORMALIZATION",
        "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS",  # detectron2.projects.deeplab's
        "INPUT.AUG.PHOTOMETRIC.HUE_DELTA",
        "MODEL.SEM_SEG_HEAD.OCR.KEY_CHANNELS",
        "MODEL.TIMM.KWARGS",
        "SOLVER.BETAS",
        "MODEL.MASK_FORMER.TEST.CLASS_TEMPERATURE",
        "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD",
        "SOLVER.CHECKPOINT_MAX_TO_KEEP",
        "DATALOADER.CLASS_BALANCED.MIN_PIXELS",
        "DATASETS.FOLDER.IGNORE_LABEL",
        "TEST.OPEN_WORLD.CALIBRATION_BINS",
    ):
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
    # the optimizer defaults are the per-pixel recipes', not the official Mask2Former ones
    assert (cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BACKBONE_MULTIPLIER) == ("SGD", 1.0)
    # Mask2Former's keys that deeplab added first keep deeplab's value
    assert cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA == 1.0


def test_the_calibration_bins_have_one_definition():
    from gmmseg import config
    from gmmseg.evaluation import metrics

    assert metrics.CALIBRATION_BINS is config.CALIBRATION_BINS
    assert add_gmmseg_config(get_cfg()).TEST.OPEN_WORLD.CALIBRATION_BINS == config.CALIBRATION_BINS


def test_a_renamed_key_names_its_new_name(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("MODEL:\n  GMM:\n    PUSH_CORRECT_ONLY: True\n")
    cfg = add_gmmseg_config(get_cfg())
    with pytest.raises(KeyError, match="PUSH_ROWS"):
        cfg.merge_from_file(str(path))
