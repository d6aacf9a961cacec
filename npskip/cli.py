"""The ``npskip`` command line.

    npskip train --dataset mnist --epochs 20       # CNN1, the paper's baseline

Every command writes into a run folder (``--out``) and resumes from what is
already there: an interrupted training restarts at its last finished epoch.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import checkpoint
from .data import DATASETS, as_float32, load
from .download import DataError
from .model import SkipCNN
from .optim import RMSprop
from .train import evaluate, fit


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


def add_common(p):
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--widths", type=parse_widths, default=(16, 16, 32),
                   help="maps per conv layer, comma-separated (default 16,16,32)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training and N/5 test images (quick looks)")
    p.add_argument("--data-dir", default=None, help="data folder (default $NPSKIP_DATA or ~/.cache/npskip)")
    p.add_argument("--mirror", default=None, help="data mirror base URL or folder ($NPSKIP_MIRROR)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def load_splits(args, seed):
    """(x_train, y_train, x_val, y_val, x_test, y_test) as float32 images and int labels."""
    ds = load(args.dataset, data_dir=args.data_dir, mirror=args.mirror)
    x_tr, y_tr, x_val, y_val = ds.validation_split(args.val_fraction, seed=seed)
    x_te, y_te = ds.x_test, ds.y_test
    if args.limit:
        x_tr, y_tr = x_tr[:args.limit], y_tr[:args.limit]
        n_small = max(args.limit // 5, 1)
        x_val, y_val, x_te, y_te = x_val[:n_small], y_val[:n_small], x_te[:n_small], y_te[:n_small]
    return (as_float32(x_tr), y_tr, as_float32(x_val), y_val, as_float32(x_te), y_te,
            ds.input_shape, ds.num_classes)


def train_resumable(model, path, x, y, *, routes=None, validation_data=None, epochs, batch_size,
                    seed, progress):
    """fit() with a checkpoint after every epoch at ``path``; resumes from it if present.

    Returns (model, history). The finished model is saved at ``path`` too.
    """
    path = Path(path)
    history, optimizer = None, RMSprop()
    if path.exists():
        model, saved_optimizer, extra = checkpoint.load(path, with_optimizer=True)
        optimizer = saved_optimizer or optimizer
        history = (extra or {}).get("history")
        if history:
            print(f"resuming {path.name} after epoch {len(history['loss'])}")

    def on_epoch_end(epoch, h):
        checkpoint.save(path, model, optimizer, extra={"history": h})
        if not progress:       # a log line per epoch instead of a bar
            val = (f", val_loss {h['val_loss'][-1]:.4f}, val_acc {h['val_accuracy'][-1]:.4f}"
                   if h["val_loss"][-1] is not None else "")
            print(f"{path.stem} epoch {epoch + 1}/{epochs}: loss {h['loss'][-1]:.4f}, "
                  f"acc {h['accuracy'][-1]:.4f}{val} ({h['seconds'][-1]:.0f} s)", flush=True)

    history = fit(model, x, y, routes=routes, epochs=epochs, batch_size=batch_size,
                  validation_data=validation_data, seed=seed, optimizer=optimizer,
                  history=history, progress=progress,
                  on_epoch_end=on_epoch_end)
    return model, history


def cmd_train(args):
    out = Path(args.out or f"runs/cnn1-{args.dataset}-seed{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, x_val, y_val, x_te, y_te, shape, classes = load_splits(args, args.seed)
    print(f"CNN1 on {args.dataset}: {len(x_tr)} training, {len(x_val)} validation, "
          f"{len(x_te)} test images; widths {args.widths}; seed {args.seed}")
    model = SkipCNN(shape, classes, args.widths, seed=args.seed)
    start = time.perf_counter()
    model, history = train_resumable(
        model, out / "cnn1.npz", x_tr, y_tr, validation_data=(x_val, y_val), epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress)
    test_loss, test_acc = evaluate(model, x_te, y_te)
    result = {
        "dataset": args.dataset, "seed": args.seed, "widths": list(args.widths),
        "epochs": args.epochs, "batch_size": args.batch_size,
        "train_count": len(x_tr), "val_count": len(x_val), "test_count": len(x_te),
        "test_loss": test_loss, "test_accuracy": test_acc, "paper_test_accuracy": 0.98,
        "train_seconds_this_session": time.perf_counter() - start,
        "train_seconds_all_epochs": float(sum(history["seconds"])),
        "history": history,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"test accuracy {test_acc:.4f} on {len(x_te)} images (paper: 0.98); "
          f"test loss {test_loss:.4f}; training {sum(history['seconds']):.0f} s over "
          f"{len(history['loss'])} epochs; saved {out / 'cnn1.npz'}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npskip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train CNN1 (the full network) and report test accuracy")
    add_common(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/cnn1-<dataset>-seed<seed>)")
    p.set_defaults(func=cmd_train)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (DataError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
