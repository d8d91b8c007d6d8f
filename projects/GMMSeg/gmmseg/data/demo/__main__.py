"""`python -m gmmseg.data.demo [--root R] [--seed S]`: generate the demo dataset."""

import argparse
import time

from .files import DEMO_DEFAULT_SIZES, generate_demo_dataset
from .scene import DEMO_SPLITS


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Generate the GMMSeg demo dataset.")
    parser.add_argument(
        "--root", default=None, help="datasets folder (default $DETECTRON2_DATASETS or ./datasets)"
    )
    parser.add_argument("--seed", type=int, default=0)
    for split in DEMO_SPLITS:
        parser.add_argument(f"--num-{split}", type=int, default=DEMO_DEFAULT_SIZES[split])
    args = parser.parse_args(argv)
    start = time.perf_counter()
    sizes = {s: getattr(args, f"num_{s}") for s in DEMO_SPLITS}
    folder = generate_demo_dataset(args.root, args.seed, sizes)
    print(f"demo dataset ready at {folder} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
