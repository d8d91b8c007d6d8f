"""One run of a study, each step a tool in a child process (processes.py): train it
(tools/train_net.py, resumed when interrupted), fit its anomaly scores (tools/fit_scores.py) and
evaluate a checkpoint (`tools/train_net.py --eval-only`). A step whose output exists is not done
again, so a stopped study continues where it was."""

import json
import os
from typing import Dict, List, Sequence

from .processes import run_logged, tool_command

__all__ = ["train_command", "fit_scores", "evaluate_checkpoint", "run_one"]


def train_command(
    config: str, out_dir: str, opts: Sequence[str], settings: Sequence[str] = ()
) -> List[str]:
    """tools/train_net.py of `config` with the overrides `opts`, into OUTPUT_DIR `out_dir`, no
    evaluation during training (DATASETS.TEST empty), then the study's own `settings` (KEY VALUE
    ..., e.g. SOLVER.MAX_ITER); --resume when out_dir holds a last_checkpoint. OUTPUT_DIR,
    DATASETS.TEST and `settings` come after `opts`: the study's choices win over a variant's."""
    resume = ["--resume"] if os.path.exists(os.path.join(out_dir, "last_checkpoint")) else []
    return tool_command(
        "train_net.py",
        "--config-file",
        config,
        *resume,
        *opts,
        "OUTPUT_DIR",
        out_dir,
        "DATASETS.TEST",
        "()",
        *settings,
    )


def fit_scores(config: str, opts: Sequence[str], weights: str, nice: int = 0) -> str:
    """tools/fit_scores.py of `weights` on the config's training split (known pixels only), in a
    child process with one thread: <weights without .pth>_fit.json next to the checkpoint (reused
    when there); its output in <weights without .pth>_fit_stdout.txt."""
    path = os.path.splitext(weights)[0] + "_fit.json"
    if os.path.exists(path):
        return path
    cmd = tool_command(
        "fit_scores.py",
        "--config-file",
        config,
        "--output",
        path,
        *opts,
        "MODEL.WEIGHTS",
        weights,
        nice=nice,
    )
    run_logged(cmd, path[: -len(".json")] + "_stdout.txt", f"fitting the scores of {weights}")
    return path


def evaluate_checkpoint(
    config: str,
    opts: Sequence[str],
    weights: str,
    datasets: Sequence[str],
    out_dir: str,
    nice: int = 0,
    fit=False,
) -> Dict:
    """`tools/train_net.py --eval-only` of `weights` on `datasets`, in a child process with one
    thread (niced by `nice`), its OUTPUT_DIR `out_dir`: {dataset: results}, also in
    out_dir/inference/results.json. `fit`: with the fitted scores (fit_scores first)."""
    os.makedirs(out_dir, exist_ok=True)
    if fit:
        opts = list(opts) + ["MODEL.ANOMALY_FIT", fit_scores(config, opts, weights, nice)]
    cmd = tool_command(
        "train_net.py",
        "--config-file",
        config,
        "--eval-only",
        *opts,
        "MODEL.WEIGHTS",
        weights,
        "OUTPUT_DIR",
        out_dir,
        "DATASETS.TEST",
        "(" + "".join(f"'{d}'," for d in datasets) + ")",
        nice=nice,
    )
    run_logged(
        cmd, os.path.join(out_dir, "stdout.txt"), f"evaluating {weights} on {', '.join(datasets)}"
    )
    with open(os.path.join(out_dir, "inference", "results.json")) as f:
        return json.load(f)


def run_one(
    config: str, out_dir: str, opts: Sequence[str], datasets: Sequence[str], fit=False
) -> Dict:
    """Train (unless out_dir/model_final.pth exists) and evaluate one run in child processes;
    returns its results, also in out_dir/results.json (read instead when it exists; the
    evaluation's files in out_dir/eval/, the training's output in out_dir/stdout.txt)."""
    result_path = os.path.join(out_dir, "results.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    if not os.path.exists(os.path.join(out_dir, "model_final.pth")):
        run_logged(
            train_command(config, out_dir, opts), os.path.join(out_dir, "stdout.txt"), "training"
        )
    weights = os.path.join(out_dir, "model_final.pth")
    result = evaluate_checkpoint(
        config, opts, weights, datasets, os.path.join(out_dir, "eval"), fit=fit
    )
    with open(result_path, "w") as f:
        json.dump(result, f, default=float)
    return result
