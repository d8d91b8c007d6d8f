"""Checks that a checkpoint fits the model its config builds, before anything is loaded.

detectron2's checkpointer skips tensors whose shapes differ with only a warning; for a GMM that
silently leaves means, stds or the memory at their initial values. Here a mismatch stops with the
config key and both values. Checkpoints are read with torch.load(weights_only=True): tensors and
plain containers only, never code.
"""
import os

import torch
from detectron2.utils.file_io import PathManager

__all__ = ["load_state_dict_safely", "check_checkpoint_matches_config"]


def load_state_dict_safely(path: str) -> dict:
    """The model state dict of a .pth checkpoint (detectron2's {"model": ...} or a bare one)."""
    local = PathManager.get_local_path(path)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"MODEL.WEIGHTS={path!r}: no such file")
    try:
        ckpt = torch.load(local, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle with objects, or not a torch file
        raise ValueError(f"MODEL.WEIGHTS={path!r} cannot be read as a weights-only checkpoint "
                         f"(tensors and plain containers): {e}") from e
    return ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt


def _explain(key, ckpt_shape, model_shape):
    if key.endswith("means") and len(ckpt_shape) == 3:
        names = ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "MODEL.GMM.NUM_COMPONENTS", "MODEL.GMM.EMBED_DIM"]
        diffs = [f"{n}: checkpoint {a}, config {b}" for n, a, b in zip(names, ckpt_shape, model_shape) if a != b]
        return "; ".join(diffs)
    if key.endswith("memory.bank") and len(ckpt_shape) == 3:
        return f"MODEL.GMM.MEMORY_SIZE: checkpoint {ckpt_shape[1]}, config {model_shape[1]}"
    return ""


def check_checkpoint_matches_config(path: str, model: torch.nn.Module):
    """Raise ValueError naming the key and both shapes if a checkpoint tensor does not fit `model`.

    Only .pth files are checked (detectron2's .pkl model-zoo files are backbone weights)."""
    if not path or not path.endswith(".pth"):
        return
    state = load_state_dict_safely(path)
    model_state = model.state_dict()
    problems = []
    for key, value in state.items():
        if key in model_state and hasattr(value, "shape") and tuple(value.shape) != tuple(model_state[key].shape):
            why = _explain(key, tuple(value.shape), tuple(model_state[key].shape))
            problems.append(f"  {key}: checkpoint {tuple(value.shape)} vs model {tuple(model_state[key].shape)}"
                            + (f" ({why})" if why else ""))
    if problems:
        raise ValueError(f"Checkpoint {path} does not match the model built from the config:\n" + "\n".join(problems))
