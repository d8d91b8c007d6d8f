"""How much every figure of `make demo`'s table moves between runs (studies/demo_spread.py):
tools/run_demo.py once per (seed, thread count), each in its own folder, then per table row and
model the values, mean, sample std and range over the runs."""

import os
import statistics
from typing import Dict, List, Optional, Sequence

from .processes import run_logged, tool_command

__all__ = ["run_dir", "run_demo", "read_table", "spread", "markdown"]


def run_dir(output: str, seed: int, threads: int) -> str:
    return os.path.join(output, f"seed{seed}_threads{threads}")


def run_demo(output: str, seed: int, threads: int, opts: Sequence[str]) -> str:
    """tools/run_demo.py with SEED `seed` and `threads` OpenMP / MKL threads (the trainings and the
    evaluations) into run_dir(...), its output in run_demo.log there; returns the folder. Skipped
    when its summary.json exists. RuntimeError naming the log when the demo fails."""
    out = run_dir(output, seed, threads)
    if os.path.exists(os.path.join(out, "summary.json")):
        return out
    os.makedirs(out, exist_ok=True)
    print(f"[spread] seed {seed}, {threads} thread(s): {out}", flush=True)
    run_logged(
        tool_command("run_demo.py", "--output", out, "SEED", str(seed), *opts),
        os.path.join(out, "run_demo.log"),
        f"run_demo for seed {seed}, {threads} thread(s)",
        env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)},
    )
    return out


def read_table(path: str) -> Dict[str, Dict[str, Optional[float]]]:
    """{row name: {model: float or None ("-")}} from the first table of a run_demo summary.txt."""
    with open(path) as f:
        lines = f.read().split("\n\n")[0].splitlines()
    models = [c.strip() for c in lines[0].split("|")[1:]]
    table = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.split("|")]
        table[cells[0]] = {m: (None if v == "-" else float(v)) for m, v in zip(models, cells[1:])}
    return table


def spread(tables: List[Dict]) -> Dict:
    """{row: {model: {"values", "mean", "std", "min", "max"}}} over runs (std: sample, n - 1); a
    (row, model) missing in every run is left out."""
    out = {}
    for row in tables[0]:
        out[row] = {}
        for model in tables[0][row]:
            vals = [t[row][model] for t in tables if t.get(row, {}).get(model) is not None]
            if not vals:
                continue
            out[row][model] = {
                "values": vals,
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "min": min(vals),
                "max": max(vals),
            }
    return out


def markdown(result: Dict, runs: Sequence[str]) -> str:
    """The spread as Markdown: the runs, then one row per table row, "mean +- std [min, max]" per model."""
    models = list(next(iter(result.values())))
    head = "| metric | " + " | ".join(f"{m}: mean +- std [min, max]" for m in models) + " |"
    lines = [f"Runs: {', '.join(runs)}", "", head, "|---" * (len(models) + 1) + "|"]
    for row, by_model in result.items():
        cells = [
            f"{s['mean']:.2f} +- {s['std']:.2f} [{s['min']:.2f}, {s['max']:.2f}]" if (s := by_model.get(m)) else "-"
            for m in models
        ]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
