#!/usr/bin/env python
"""Every anomaly score of every model on near, far and far-through-another-camera sets, mean +- std
over seeds, and whether one GMM score beats every score of the softmax twin on all of them beyond
the seed spread (gmmseg/studies/score_family.py says what "beyond" means).

    python studies/score_family_study.py --output docs/results/score_family_10k \\
        --datasets camvid_openset_val camvid_static_val camvid_static_shift_val \\
        --twin twin 'runs/lite0/twin/seed*/eval/iter10000/{dataset}/inference/results.json' \\
        --gmm release 'runs/lite0/release/seed*/eval/iter10000/{dataset}/inference/results.json'

Each model is a glob of the `--eval-only` results.json files of its seeds ("{dataset}" stands for
each dataset; the glob's first "*" is the seed): the layout of studies/curve_study.py is shown
above; any other (seed_study, fit-and-evaluate folders) works with its own glob. Writes
<output>.md (the family table and the verdict) and <output>.json (per seed).
"""

import argparse
import json
import os

from gmmseg.studies.score_family import METRICS, collect, family_table, verdict_table


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--output", required=True, help="path prefix of the .md and .json written")
    ap.add_argument("--datasets", nargs="+", required=True)
    ap.add_argument("--twin", nargs=2, action="append", required=True, metavar=("NAME", "GLOB"))
    ap.add_argument("--gmm", nargs=2, action="append", required=True, metavar=("NAME", "GLOB"))
    ap.add_argument("--title", default="", help="a line above the tables")
    args = ap.parse_args(argv)
    study = {}
    for name, pattern in args.twin + args.gmm:
        study[name] = collect(pattern, args.datasets)
        if not study[name]:
            ap.error(f"{name}: no results.json matches {pattern!r} for any of {args.datasets}")
    md = [args.title] if args.title else []
    md.append(
        "## Every score, mean +- std over seeds\n\n" + family_table(study, args.datasets, METRICS)
    )
    for twin, _ in args.twin:
        for gmm, _ in args.gmm:
            md.append(
                f"## {gmm}: each score against {twin}'s best on each set (AUROC)\n\n"
                + verdict_table(study[gmm], study[twin], args.datasets)
            )
    text = "\n\n".join(md) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output + ".md", "w") as f:
        f.write(text)
    with open(args.output + ".json", "w") as f:
        json.dump({"datasets": args.datasets, "per_seed": study}, f, indent=1, sort_keys=True)
    print(text)
    return study


if __name__ == "__main__":
    main()
