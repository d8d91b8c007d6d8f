"""Load a script of the repository (tools/, benchmarks/, studies/) as a module, by its file path:
no folder is put on sys.path. The module is registered under its file name, so a script that
imports a sibling (benchmarks/gpu_speed.py: `from model_timing import ...`) finds the sibling once
the test has loaded it with this function first."""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(relative_path: str):
    """The module of the script ROOT/relative_path (loaded once per process)."""
    path = os.path.join(ROOT, relative_path)
    name = os.path.splitext(os.path.basename(path))[0]
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == path:
        return loaded
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such script: {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
