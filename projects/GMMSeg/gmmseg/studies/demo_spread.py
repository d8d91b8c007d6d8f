"""How much every figure of `make demo`'s tables moves between runs (studies/demo_spread.py):
tools/run_demo.py once per (seed, thread count), each in its own folder, then per table row and
column (a model, or a split and a model) the values, mean, sample std and range over the runs, and
the widest AUROC range (the issue-33 target: every AUROC within 3 points)."""

import os
import statistics
from typing import Dict, List, Optional, Sequence

from .processes import run_logged, tool_command

__all__ = ["run_dir", "run_demo", "read_table", "spread", "widest_range", "markdown"]


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


def _is_table(block: List[str]) -> bool:
    return len(block) >= 2 and " | " in block[0] and set(block[1]) <= {"-", "+"}


def read_table(path: str) -> Dict[str, Dict[str, Optional[float]]]:
    """{row: {column: float or None ("-")}} of every table a run_demo summary.txt prints (aligned
    text, " | " between cells, a rule of "-" and "+" under the header). The rows of the first table
    ("metric | softmax | gmm") keep their names; those of the others are named "<corner> <row>",
    e.g. "AUROC % likelihood" with the columns "far: gmm", ... Markdown tables and text are skipped."""
    with open(path) as f:
        blocks = [b.splitlines() for b in f.read().split("\n\n")]
    table = {}
    for block in filter(_is_table, blocks):
        header = [c.strip() for c in block[0].split(" | ")]
        for line in block[2:]:
            cells = [c.strip() for c in line.split(" | ")]
            row = cells[0] if header[0] == "metric" else f"{header[0]} {cells[0]}"
            table[row] = {
                c: (None if v == "-" else float(v)) for c, v in zip(header[1:], cells[1:])
            }
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


def widest_range(result: Dict, prefix: str = "AUROC % ") -> Optional[tuple]:
    """(max - min, row, column) of the (row, column) whose values spread widest, among the rows
    whose name starts with `prefix` (by default those of the demo's comparison table of AUROCs,
    not its table of the GMM network's softmax scores); None when there is none."""
    ranges = [
        (s["max"] - s["min"], row, column)
        for row, by_column in result.items()
        if row.startswith(prefix)
        for column, s in by_column.items()
    ]
    return max(ranges) if ranges else None


def markdown(result: Dict, runs: Sequence[str]) -> str:
    """The spread as Markdown: the runs, the widest AUROC range, then the rows, "mean +- std [min,
    max]" per column ("-": no value in any run). Rows are grouped into one table per set of columns
    (a row starts a new table when it shares no column with the rows before it)."""
    groups = []  # [columns in order of appearance, rows]
    for row, by_column in result.items():
        if not by_column:
            continue
        if not groups or not set(by_column) & set(groups[-1][0]):
            groups.append([[], []])
        groups[-1][0] += [c for c in by_column if c not in groups[-1][0]]
        groups[-1][1].append(row)
    lines = [f"Runs: {', '.join(runs)}"]
    widest = widest_range(result)
    if widest is not None:
        lines.append(f"Widest AUROC range: {widest[0]:.2f} points ({widest[1]}, {widest[2]})")
    for columns, rows in groups:
        lines += [
            "",
            "| metric | " + " | ".join(f"{c}: mean +- std [min, max]" for c in columns) + " |",
        ]
        lines.append("|---" * (len(columns) + 1) + "|")
        for row in rows:
            cells = [
                f"{s['mean']:.2f} +- {s['std']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"
                if (s := result[row].get(c))
                else "-"
                for c in columns
            ]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
