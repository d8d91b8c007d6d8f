"""Learning curves: runs trained with a checkpoint every `period` iterations, every checkpoint
evaluated as it appears (studies/curve_study.py; the report is curve_report.py).

A run is <output>/<variant>/seed<s>/ (train_net's OUTPUT_DIR; `SEED s MODEL.GMM.SEED s` added to
its overrides). Checkpoint model_<i>.pth (i + 1 a multiple of the period) is evaluated by
`tools/train_net.py --eval-only`, one dataset at a time, into
<run>/eval/iter<i + 1>/<dataset>/inference/results.json. Runs train `jobs` at a time, one thread
each; evaluations run one at a time beside them, niced. Everything is resumable: a finished
training or evaluation is not done again, an interrupted training resumes from its last
checkpoint, and a training that another invocation runs (its pid in <run>/training.pid) is waited
for, not started twice.
"""

import glob
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Collection, Dict, List, Optional, Sequence

from .processes import ONE_THREAD, repository_root
from .runs import evaluate_checkpoint, train_command

__all__ = [
    "Run",
    "train",
    "pending_evaluations",
    "evaluation_loop",
    "train_and_evaluate",
    "RETRY_AFTER_S",
]

#: an evaluation that failed is tried again this many seconds later while training goes on
RETRY_AFTER_S = 600


class Run:
    """One (variant, seed) of a curve study: its config (relative to the repository or absolute),
    its folder and its overrides."""

    def __init__(self, output: str, variant: str, config: str, opts: str, seed: int):
        self.variant, self.seed = variant, seed
        self.config = config if os.path.isabs(config) else os.path.join(repository_root(), config)
        self.dir = os.path.join(os.path.abspath(output), variant, f"seed{seed}")
        self.opts = opts.split() + ["SEED", str(seed), "MODEL.GMM.SEED", str(seed)]

    def __repr__(self):
        return f"{self.variant}/seed{self.seed}"

    def checkpoints(self, period: int) -> Dict[int, str]:
        """{iterations done: checkpoint path} of the periodic checkpoints on disk."""
        out = {}
        for path in glob.glob(os.path.join(self.dir, "model_*.pth")):
            m = re.fullmatch(r"model_(\d+)\.pth", os.path.basename(path))
            if m and (int(m.group(1)) + 1) % period == 0:
                out[int(m.group(1)) + 1] = path
        return out

    def result_path(self, iteration, dataset: str) -> str:
        return os.path.join(
            self.dir, "eval", f"iter{iteration}", dataset, "inference", "results.json"
        )


def training_process(run: Run) -> Optional[int]:
    """pid of a live training of `run` started by another invocation (its <run>/training.pid), or None."""
    try:
        with open(os.path.join(run.dir, "training.pid")) as f:
            pid = int(f.read())
        with open(f"/proc/{pid}/cmdline", "rb") as f:  # Linux; the pid may have been reused
            cmdline = f.read()
    except (OSError, ValueError):
        return None
    return pid if b"train_net.py" in cmdline and run.dir.encode() in cmdline else None


def train(run: Run, max_iter: int, period: int) -> None:
    """Train `run` to max_iter (resuming it), keeping every checkpoint, unless it is finished; if
    another invocation of the study trains it now (e.g. one stopped and restarted with other
    variants), wait for that. RuntimeError naming the log when the training fails."""
    while training_process(run) is not None:
        time.sleep(30)
    if os.path.exists(os.path.join(run.dir, "model_final.pth")):
        return
    os.makedirs(run.dir, exist_ok=True)
    settings = ["SOLVER.MAX_ITER", str(max_iter), "SOLVER.CHECKPOINT_PERIOD", str(period)]
    cmd = train_command(
        run.config, run.dir, run.opts, settings + ["SOLVER.CHECKPOINT_MAX_TO_KEEP", "0"]
    )
    print(f"[curves] training {run}{' (resumed)' if '--resume' in cmd else ''}", flush=True)
    pid_file = os.path.join(run.dir, "training.pid")
    with open(os.path.join(run.dir, "stdout.txt"), "a") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=repository_root(),
            env=dict(os.environ, **ONE_THREAD),
        )
        with open(pid_file, "w") as f:
            f.write(str(proc.pid))
        code = proc.wait()
    os.remove(pid_file)
    if code:
        raise RuntimeError(f"training {run} failed: {run.dir}/stdout.txt")
    print(f"[curves] {run} trained", flush=True)


def evaluate(run: Run, iteration: int, checkpoint: str, dataset: str, fit: bool = False) -> None:
    """`--eval-only` of one checkpoint on one dataset, niced (`fit`: with the fitted scores)."""
    out_dir = os.path.dirname(os.path.dirname(run.result_path(iteration, dataset)))
    evaluate_checkpoint(run.config, run.opts, checkpoint, [dataset], out_dir, nice=10, fit=fit)
    print(f"[curves] {run} evaluated at iteration {iteration} on {dataset}", flush=True)


def pending_evaluations(
    runs: Sequence[Run],
    period: int,
    datasets: Sequence[str],
    eval_at: Optional[Collection[int]] = None,
) -> List:
    """(iteration, run, checkpoint, dataset) not yet evaluated, earliest iteration first (then the
    runs' order, then the datasets'); `eval_at`: only these iterations (None: every checkpoint)."""
    todo = [
        (i, k, j, run, path, d)
        for k, run in enumerate(runs)
        for i, path in run.checkpoints(period).items()
        for j, d in enumerate(datasets)
        if (eval_at is None or i in eval_at) and not os.path.exists(run.result_path(i, d))
    ]
    return [(i, run, path, d) for i, _, _, run, path, d in sorted(todo, key=lambda t: t[:3])]


def evaluation_loop(
    runs: Sequence[Run],
    period: int,
    datasets: Sequence[str],
    training_done: threading.Event,
    eval_at: Optional[Collection[int]] = None,
    fit: bool = False,
) -> None:
    """Evaluate checkpoints as they appear until training is over and none is left. One that
    fails is tried again RETRY_AFTER_S later while training goes on (e.g. a dataset not yet in
    place), and left for the next invocation of the command once training is over."""
    failed = {}  # (iteration, run, dataset) -> time of the failure
    while True:
        now = time.time()
        todo = [
            t
            for t in pending_evaluations(runs, period, datasets, eval_at)
            if now - failed.get((t[0], str(t[1]), t[3]), -RETRY_AFTER_S) >= RETRY_AFTER_S
            and not (training_done.is_set() and (t[0], str(t[1]), t[3]) in failed)
        ]
        if not todo:
            if training_done.is_set():
                return
            time.sleep(20)
            continue
        iteration, run, path, dataset = todo[0]
        try:
            evaluate(run, iteration, path, dataset, fit)
        except RuntimeError as e:
            print(f"[curves] {e}", file=sys.stderr, flush=True)
            failed[(iteration, str(run), dataset)] = time.time()


def train_and_evaluate(
    runs: Sequence[Run],
    max_iter: int,
    period: int,
    datasets: Sequence[str],
    jobs: int,
    eval_at: Optional[Collection[int]] = None,
    fit: bool = False,
) -> None:
    """Train the runs `jobs` at a time (in the runs' order) while one thread evaluates their
    checkpoints; a run whose training fails is reported and the others go on."""
    done = threading.Event()
    evaluator = threading.Thread(
        target=evaluation_loop, args=(runs, period, datasets, done, eval_at, fit)
    )
    evaluator.start()
    try:
        with ThreadPoolExecutor(jobs) as pool:
            for job in [pool.submit(train, run, max_iter, period) for run in runs]:
                try:
                    job.result()
                except RuntimeError as e:  # keep the others
                    print(f"[curves] {e}", file=sys.stderr, flush=True)
    finally:
        done.set()
        evaluator.join()
