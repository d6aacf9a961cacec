"""The ``npskip`` command line.

    npskip train --dataset mnist --epochs 20        # CNN1 alone, the paper's baseline
    npskip reproduce --dataset mnist --seeds 0 1 2  # the whole paper, with a report
    npskip reproduce --dataset mnist --quick        # a first look in a couple of minutes

Every command writes into a run folder (``--out``) and resumes from what is
already there: finished stages are loaded, an interrupted training restarts at
its last finished epoch.
"""

import argparse
import sys
import time
from pathlib import Path

from . import checkpoint, extension
from .data import DATASETS
from .download import DataError
from .pipeline import Config, SeedRun, load_data
from .report import write_report

QUICK = {"limit": 3000, "epochs": 2}


def parse_widths(text):
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, e.g. 16,16,32; "
                                         f"received {text!r}") from None
    if len(widths) < 1 or min(widths) < 10:
        raise argparse.ArgumentTypeError(f"every conv layer needs at least 10 maps (the paper "
                                         f"ranks the first ten); received {text!r}")
    return widths


def unit_interval(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, received {text!r}")
    return value


def add_common(p):
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--widths", type=parse_widths, default=(16, 16, 32),
                   help="maps per conv layer, comma-separated (default 16,16,32)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training images and N/5 validation and test images")
    p.add_argument("--data-dir", default=None,
                   help="data folder (default $NPSKIP_DATA or ~/.cache/npskip)")
    p.add_argument("--mirror", default=None, help="data mirror base URL or folder ($NPSKIP_MIRROR)")
    p.add_argument("--no-progress", action="store_true",
                   help="one log line per epoch instead of progress bars")


def make_config(args, seeds):
    return Config(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                  widths=args.widths, maps=getattr(args, "maps", 10),
                  top=getattr(args, "top_images", 10), val_fraction=args.val_fraction,
                  limit=args.limit, seeds=list(seeds),
                  labels=getattr(args, "labels", "behaviour"),
                  router=getattr(args, "router", "none"),
                  label_confidence=getattr(args, "label_confidence", 0.9),
                  **{k: getattr(args, k) for k in ("any_init", "any_distill_weight")
                     if hasattr(args, k)})


def log(message):
    print(message, flush=True)


def cmd_train(args):
    out = Path(args.out or f"runs/cnn1-{args.dataset}-seed{args.seed}")
    config = make_config(args, [args.seed])
    data = load_data(config, args.seed, args.data_dir, args.mirror)
    log(f"CNN1 on {args.dataset}: {len(data[1])} training, {len(data[3])} validation, "
        f"{len(data[5])} test images; widths {args.widths}; seed {args.seed}")
    start = time.perf_counter()
    result = SeedRun(out, config, args.seed, data, progress=not args.no_progress,
                     log=log).run_cnn1()
    log(f"test accuracy {result['test_accuracy']:.4f} on {result['test_count']} images "
        f"(paper: 0.98); training {sum(result['history']['seconds']):.0f} s over "
        f"{len(result['history']['loss'])} epochs ({time.perf_counter() - start:.0f} s this "
        f"session); saved {out / 'cnn1.npz'} and {out / 'cnn1.json'}")
    return 0


def cmd_reproduce(args):
    if args.quick:
        args.limit = args.limit or QUICK["limit"]
        args.epochs = QUICK["epochs"] if args.epochs is None else args.epochs
    args.epochs = 20 if args.epochs is None else args.epochs
    out = Path(args.out or f"runs/reproduce-{args.dataset}" + ("-quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    config = make_config(args, args.seeds)
    start = time.perf_counter()
    folders, x_first = {}, None
    for seed in args.seeds:
        data = load_data(config, seed, args.data_dir, args.mirror)
        log(f"seed {seed}: {len(data[1])} training, {len(data[3])} validation, {len(data[5])} "
            f"test images of {args.dataset}; widths {config.widths}; {config.epochs} epochs")
        folders[seed] = out / f"seed{seed}"
        run = SeedRun(folders[seed], config, seed, data, progress=not args.no_progress, log=log)
        run.run_all()
        extension.run_all(run)
        if x_first is None:
            x_first = data[0]
    results = write_report(out, config, folders, x_train=x_first)
    log((out / "report.md").read_text())
    log(f"wrote {out / 'results.json'}, {out / 'report.md'} and figures "
        f"({time.perf_counter() - start:.0f} s this session)")
    return 0 if results else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npskip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train CNN1 (the full network) and report test accuracy")
    add_common(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/cnn1-<dataset>-seed<seed>)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("reproduce", help="the paper end to end: CNN1, ranking, CNN2, CNN3, report")
    add_common(p)
    p.set_defaults(epochs=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--maps", type=int, default=10, help="maps ranked per conv layer (default 10)")
    p.add_argument("--top-images", type=int, default=10,
                   help="strongest images kept per map (default 10)")
    p.add_argument("--labels", choices=("behaviour", "activation"), default="behaviour",
                   help="beyond the paper: route labels for the cheap router, from CNN3-any's "
                        "behaviour (default) or the paper's activation ranking")
    p.add_argument("--router", choices=("small", "full", "none"), default="small",
                   help="beyond the paper: 'small' (a SkipCNN on 2x-pooled images, a few %% "
                        "of CNN1's cost; default), 'full' (CNN2's size), or 'none' (paper only)")
    p.add_argument("--label-confidence", type=float, default=0.9,
                   help="behaviour labels: the cheapest route giving the true class at least "
                        "this probability (default 0.9)")
    p.add_argument("--any-init", choices=("fresh", "cnn1"), default=Config.any_init,
                   help="beyond the paper: CNN3-any starts from fresh weights or from CNN1's "
                        f"(default {Config.any_init})")
    p.add_argument("--any-distill-weight", type=unit_interval, default=Config.any_distill_weight,
                   help="beyond the paper: weight of distillation from CNN1 in CNN3-any's loss, "
                        f"0 to 1 (default {Config.any_distill_weight:g}: plain cross-entropy)")
    p.add_argument("--quick", action="store_true",
                   help=f"first {QUICK['limit']} training images, {QUICK['epochs']} epochs")
    p.add_argument("--out", default=None, help="run folder (default runs/reproduce-<dataset>)")
    p.set_defaults(func=cmd_reproduce)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (DataError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
