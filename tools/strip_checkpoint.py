#!/usr/bin/env python
"""Write an inference copy of a GMMSeg checkpoint: weights, GMM means and stds, without the GMM
memory bank and without the optimizer / scheduler / resume state.

    python tools/strip_checkpoint.py output/ade20k/model_final.pth            # -> model_final_inference.pth
    python tools/strip_checkpoint.py IN.pth OUT.pth

The bank is training state (ADE20K float32, M = 8: 150 x 8 x 32,000 x 64 x 4 B = 9.8 GB = 9.2 GiB);
inference reads only the means and stds. The copy loads with `--eval-only MODEL.WEIGHTS OUT.pth`
and `tools/demo.py` (their models are built without a bank, MODEL.GMM.MEMORY_LAYOUT "none"); it
cannot resume training. The input is memory-mapped: only what is kept is read.
"""

import argparse
import os

from gmmseg.checkpoint import strip_for_inference


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("input", help="a checkpoint written by tools/train_net.py (.pth)")
    ap.add_argument("output", nargs="?", help="default: INPUT with _inference before .pth")
    args = ap.parse_args(argv)
    out = args.output or os.path.splitext(args.input)[0] + "_inference.pth"
    if os.path.abspath(out) == os.path.abspath(args.input):
        raise SystemExit(f"strip_checkpoint: the output {out!r} would overwrite the input")
    r = strip_for_inference(args.input, out)
    print(
        f"{args.input}: {r['src_bytes'] / 1e6:,.1f} MB -> {out}: {r['dst_bytes'] / 1e6:,.1f} MB "
        f"({len(r['dropped'])} memory entries, optimizer and resume state left out)"
    )
    return r


if __name__ == "__main__":
    main()
