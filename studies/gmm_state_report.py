#!/usr/bin/env python
"""What EM did in a trained GMM model, read from its checkpoints: memory fill, components updated,
M-step count and cost, the class LayerNorm's gain. Prints one Markdown table row per checkpoint.

    python studies/gmm_state_report.py output/camvid/mask2former_lite0_openset_gmm/model_final.pth [...]

Every EM head in the checkpoint (a prefix with `means`, `updates_per_component`, `num_em_updates`)
is reported; with several checkpoints (e.g. every 500 iterations of one run) the rows show how the
state grows. Columns:
- memory: rows held / capacity over all (class, component) groups, and the smallest and largest
  class's fill (its components' rows / their capacity); "no bank" for an inference checkpoint;
- updated: components moved by at least one M-step / K * M, and the classes none of whose
  components ever moved (their Gaussians are still the random initialisation);
- updates per component: min / median / max of the M-steps each component took part in;
- M-steps: the head's count (num_em_updates);
- gain: the class LayerNorm's weight, mean [min, max] (the logit gap is capped at about
  gain x sqrt(K), docs/MASK2FORMER.md);
- real rows: the smallest and largest class's share of real (pushed, not the random initialisation)
  rows in its memory (MODEL.GMM.MEMORY_INIT "random" fills every row at the start, so "memory rows"
  is 100 % from the first iteration; this column is what the classes have actually learnt from);
- not learning: the classes gmm/coverage.py warns about, with the reason: "rows" (nearly) no real
  memory rows against the median class, "never" (nearly) never classified correctly on the
  training batches (recall < 1 %), each with its figure; "-" for a checkpoint written before these
  counters existed;
- M-step ms: median time of the M-step's arithmetic for all groups (fixed-point statistics ->
  float64, gmm/m_step.py) on this machine's CPU, one thread; the statistics themselves are kept
  up to date by every push, so this is what an M-step adds (plus the momentum blend, O(K M D)).
Reads only the checkpoint: no config, no dataset, no model built (gmmseg.analysis.em_state).
"""

import argparse

import torch

from gmmseg.analysis.em_state import checkpoint_rows, markdown


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("checkpoints", nargs="+", metavar="FILE")
    ap.add_argument("--no-timing", action="store_true", help="skip the M-step timing")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for path in args.checkpoints:
        try:
            rows += checkpoint_rows(path, time_m_step=not args.no_timing)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"gmm_state_report: {e}") from e
    print(markdown(rows))


if __name__ == "__main__":
    main()
