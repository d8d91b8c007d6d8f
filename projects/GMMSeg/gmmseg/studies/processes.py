"""How a study runs one of the repository's tools: in a child process, one thread (several runs go
on at once on a few cores), its output in a log file, a failure raised with the log's path."""

import functools
import os
import subprocess
import sys
from typing import Dict, List, Optional

__all__ = ["ONE_THREAD", "repository_root", "tool_command", "run_logged"]

#: the environment of every child: one OpenMP / MKL thread each
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@functools.lru_cache(maxsize=None)
def repository_root() -> str:
    """The checkout this package is imported from (projects/GMMSeg/gmmseg/studies/ is four folders
    below it): the studies run its tools/ and read its configs/. RuntimeError naming the folder when
    it holds no tools/train_net.py (a copy of the package installed without the repository)."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 4))
    if not os.path.isfile(os.path.join(root, "tools", "train_net.py")):
        raise RuntimeError(
            f"the studies run the repository's tools, but {os.path.join(root, 'tools', 'train_net.py')} "
            "does not exist: import gmmseg from a checkout (pip install -e . or PYTHONPATH=projects/GMMSeg)"
        )
    return root


def tool_command(tool: str, *args: str, nice: int = 0) -> List[str]:
    """The command line of tools/<tool> with this Python, niced by `nice` when it is not 0."""
    return (["nice", "-n", str(nice)] if nice else []) + [
        sys.executable,
        os.path.join(repository_root(), "tools", tool),
        *map(str, args),
    ]


def run_logged(
    cmd: List[str], log_path: str, what: str, env: Optional[Dict[str, str]] = None
) -> None:
    """Run `cmd` from the repository root, stdout and stderr to `log_path` (overwritten), with
    `env` added to this process's environment (default ONE_THREAD). RuntimeError "<what> failed:
    <log_path>" on a non-zero exit status."""
    with open(log_path, "w") as log:
        code = subprocess.run(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=repository_root(),
            env=dict(os.environ, **(ONE_THREAD if env is None else env)),
        ).returncode
    if code:
        raise RuntimeError(f"{what} failed: {log_path}")
