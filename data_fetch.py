#!/usr/bin/env python3
"""Download and verify the data sets npskip uses.

    python data_fetch.py mnist fashion-mnist cifar100
    python data_fetch.py mnist --mirror file:///path/to/mirror     # offline / CI
    python data_fetch.py mnist --data-dir ./data                  # --dest works too

A mirror is a base URL (https://, http:// or file://) or a folder whose
subfolders mnist/, fashion-mnist/, cifar100/ hold the files under their
canonical names. Files already present and verified are not downloaded again.
"""

import argparse
import os
import sys

# what was downloaded sits in <name>.part, and the next run resumes from it
INTERRUPTED = "\ninterrupted; rerun the same command to resume"

try:       # numpy takes a moment to load: a Ctrl-C then gets the same message
    from npskip.harness.data import DATASETS, fetch
    from npskip.harness.download import DataError, default_data_dir
except KeyboardInterrupt:
    print(INTERRUPTED, file=sys.stderr)
    sys.exit(130)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", choices=sorted(DATASETS))
    parser.add_argument("--mirror", default=os.environ.get("NPSKIP_MIRROR"),
                        help="base URL or folder of a mirror (default: $NPSKIP_MIRROR, "
                             "else the canonical sites)")
    parser.add_argument("--data-dir", "--dest", dest="dest", default=None,
                        help=f"data folder, as npskip's --data-dir (default: $NPSKIP_DATA, "
                             f"else {default_data_dir()})")
    args = parser.parse_args(argv)
    for name in args.datasets:
        try:
            results = fetch(name, data_dir=args.dest, mirror=args.mirror)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            return 130
        for path, downloaded in results:
            print(f"{name}: {path} ({'downloaded and verified' if downloaded else 'verified, already present'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
