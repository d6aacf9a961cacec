"""The ``npskip`` command line.

    npskip train --dataset mnist --epochs 20        # CNN1 alone, the paper's baseline
    npskip reproduce --dataset mnist --seeds 0 1 2  # the whole paper, with a report
    npskip reproduce --dataset mnist --quick        # a first look in a couple of minutes

Every command writes into a run folder (``--out``) and resumes from what is
already there: finished stages are loaded, an interrupted training restarts at
its last finished epoch. A folder made with other settings is refused (use
another ``--out``, or ``--fresh`` to start it afresh); a stage whose inputs
changed is redone, with everything built from it (npskip.runfolder). Every
argument is checked before any work starts.
"""

import argparse
import dataclasses
import re
import sys
import time
from pathlib import Path

from npskip.engine.checks import ConfigError
from npskip.exits import stages as exit_stages
from npskip.harness import checkpoint
from npskip.harness.config import NOT_RECORDED, Config, config_dict
from npskip.harness.data import DATASETS
from npskip.harness.download import DataError
from npskip.harness.runfolder import FolderLock, RunFolderError, differences, read_json, wipe
from npskip.paper.pipeline import SeedRun, load_data
from npskip.report import STAGES, write_report

QUICK = {"limit": 3000, "epochs": 2}


def parse_widths(text):
    """'16,16,32' -> (16, 16, 32); the ranges are Config's to check."""
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 16,16,32; "
                                         f"received {text!r}") from None


# Config's field -> the option that sets it (for messages naming what the user typed).
FLAGS = {"dataset": "--dataset", "epochs": "--epochs", "batch_size": "--batch-size",
         "widths": "--widths", "maps": "--maps", "top": "--top-images",
         "val_fraction": "--val-fraction", "limit": "--limit", "seeds": "--seeds",
         "exits": "--no-exits", "exit_epochs": "--exit-epochs", "exit_hidden": "--exit-hidden",
         "exit_pool": "--exit-pool"}


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
    p.add_argument("--fresh", action="store_true",
                   help="start the run folder afresh: delete its stage files first (needed "
                        "when it was made with other settings)")


def make_config(args, seeds):
    """Config from the parsed arguments; an out-of-range one stops argparse (exit 2)
    with a message naming the option, before any data is read."""
    try:
        return Config(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                      widths=args.widths, maps=getattr(args, "maps", 10),
                      top=getattr(args, "top_images", 10), val_fraction=args.val_fraction,
                      limit=args.limit, seeds=list(seeds),
                      exits=not getattr(args, "no_exits", True),
                      **{k: getattr(args, k) for k in ("exit_epochs", "exit_hidden", "exit_pool")
                         if getattr(args, k, None) is not None})
    except ConfigError as e:
        flag = "--seed" if e.name == "seeds" and args.command == "train" else FLAGS[e.name]
        args.parser.error(f"argument {flag}: expected {e.expected}, received {shown(e.value)}")


def shown(value):
    """A value as the user typed it: widths as 16,16,32."""
    if isinstance(value, (tuple, list)) and value:
        return ",".join(str(v) for v in value)
    return repr(value)


def log(message):
    print(message, flush=True)


def folder_path(text, default):
    return Path(text).expanduser() if text else Path(default)


def cmd_train(args):
    config = make_config(args, [args.seed])
    out = folder_path(args.out, f"runs/cnn1-{args.dataset}-seed{args.seed}")
    data = load_data(config, args.seed, args.data_dir, args.mirror)
    log(f"CNN1 on {args.dataset}: {len(data[1])} training, {len(data[3])} validation, "
        f"{len(data[5])} test images; widths {config.widths}; seed {args.seed}")
    start = time.perf_counter()
    run = SeedRun(out, config, args.seed, data, progress=not args.no_progress, log=log,
                  fresh=args.fresh)
    with run.lock:
        result = run.run_cnn1()
    log(f"test accuracy {result['test_accuracy']:.4f} on {result['test_count']} images "
        f"(paper: 0.98); training {sum(result['history']['seconds']):.0f} s over "
        f"{len(result['history']['loss'])} epochs ({time.perf_counter() - start:.0f} s this "
        f"session); saved {out / 'cnn1.npz'} and {out / 'cnn1.json'}")
    return 0


def seed_folders(out):
    """{seed: folder} of every seed<N> folder in ``out``."""
    found = {}
    for p in Path(out).glob("seed*"):
        if p.is_dir() and re.fullmatch(r"seed\d+", p.name):
            found[int(p.name[4:])] = p
    return dict(sorted(found.items()))


def check_other_seeds(out, config, fresh):
    """Refuse seed folders of ``out`` made with other settings (one report must never
    average two configurations), or, with fresh, start every seed folder afresh."""
    ours = {k: v for k, v in config_dict(config).items() if k not in NOT_RECORDED}
    problems = []
    for seed, folder in seed_folders(out).items():
        path = folder / "settings.json"
        if fresh:
            with FolderLock(folder):          # not while another run works in it
                wipe(folder)
            continue
        if not path.exists():
            continue                          # SeedRun judges folders without a record
        theirs = dict(read_json(path, "delete it, or start afresh with --fresh")
                      .get("settings", {}))
        theirs.pop("seed", None)
        diff = differences(theirs, ours)
        if diff:
            problems.append(f"{folder}:\n    " + "\n    ".join(diff))
    if problems:
        raise RunFolderError(f"{out} holds seeds made with other settings:\n  "
                             + "\n  ".join(problems) + "\nUse another folder (--out DIR), or "
                             "start this one afresh with --fresh, which deletes their stage "
                             "files.")
    if fresh:
        with FolderLock(out, wait=True):
            for p in [out / "results.json", out / "report.md", *out.glob("*.png")]:
                p.unlink(missing_ok=True)


def finished(folder):
    return all((folder / f"{s}.json").exists() for s in STAGES)


def cmd_reproduce(args):
    if args.quick:
        args.limit = args.limit or QUICK["limit"]
        args.epochs = QUICK["epochs"] if args.epochs is None else args.epochs
    args.epochs = 20 if args.epochs is None else args.epochs
    config = make_config(args, args.seeds)
    out = folder_path(args.out, f"runs/reproduce-{args.dataset}" + ("-quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    check_other_seeds(out, config, args.fresh)
    start = time.perf_counter()
    figures_from = None
    for seed in config.seeds:
        data = load_data(config, seed, args.data_dir, args.mirror)
        log(f"seed {seed}: {len(data[1])} training, {len(data[3])} validation, {len(data[5])} "
            f"test images of {args.dataset}; widths {config.widths}; {config.epochs} epochs")
        run = SeedRun(out / f"seed{seed}", config, seed, data, progress=not args.no_progress,
                      log=log, fresh=args.fresh)
        with run.lock:                        # one run per seed folder at a time
            run.run_all()
            exit_stages.run_all(run)
        if figures_from is None:
            figures_from = (run.folder, data[0])
    # The report covers every finished seed folder present, so seeds run side by side
    # as separate commands end in one report; its lock makes the last writer see all.
    with FolderLock(out, wait=True):
        folders = {}
        for seed, folder in seed_folders(out).items():
            if finished(folder):
                folders[seed] = folder
            else:
                log(f"seed {seed}: not finished, left out of the report (its own command "
                    f"writes the report again when it ends)")
        report_config = dataclasses.replace(config, seeds=list(folders))
        results = write_report(out, report_config, folders, x_train=figures_from[1],
                               figures_from=figures_from[0])
    log((out / "report.md").read_text())
    log(f"wrote {out / 'results.json'}, {out / 'report.md'} and figures for seeds "
        f"{list(folders)} ({time.perf_counter() - start:.0f} s this session)")
    return 0 if results else 1


def widths_value_first(argv):
    """'--widths -5,16' -> '--widths=-5,16': argparse would take '-5,16' for an option
    and report a missing value instead of the bad width."""
    argv, out = list(sys.argv[1:] if argv is None else argv), []
    while argv:
        a = argv.pop(0)
        if a == "--widths" and argv and re.match(r"-\d", argv[0]):
            a = f"--widths={argv.pop(0)}"
        out.append(a)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npskip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train CNN1 (the full network) and report test accuracy")
    add_common(p)
    p.set_defaults(parser=p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/cnn1-<dataset>-seed<seed>)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("reproduce", help="the paper end to end: CNN1, ranking, CNN2, CNN3, report")
    add_common(p)
    p.set_defaults(epochs=None, parser=p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--maps", type=int, default=10, help="maps ranked per conv layer (default 10)")
    p.add_argument("--top-images", type=int, default=10,
                   help="strongest images kept per map (default 10)")
    p.add_argument("--no-exits", action="store_true",
                   help="stop after the paper's stages (by default CNN1 also gets an exit head "
                        "after each conv layer but the last: beyond the paper)")
    p.add_argument("--exit-epochs", type=int, default=None,
                   help=f"epochs of the exit heads' training (default {Config.exit_epochs}, "
                        f"with --quick too: they are cheap)")
    p.add_argument("--exit-hidden", type=int, default=None,
                   help=f"hidden units of each exit head, 0 for one dense layer (default "
                        f"{Config.exit_hidden})")
    p.add_argument("--exit-pool", type=int, default=None,
                   help=f"each exit head averages its maps over pool x pool blocks before its "
                        f"dense layers, 1 for none (default {Config.exit_pool})")
    p.add_argument("--quick", action="store_true",
                   help=f"first {QUICK['limit']} training images, {QUICK['epochs']} epochs")
    p.add_argument("--out", default=None, help="run folder (default runs/reproduce-<dataset>)")
    p.set_defaults(func=cmd_reproduce)

    args = parser.parse_args(widths_value_first(argv))
    try:
        return args.func(args)
    except (DataError, checkpoint.CheckpointError, RunFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:                 # a range that needs the data (top <= images)
        print(f"error: argument {FLAGS.get(e.name, e.name)}: expected {e.expected}, "
              f"received {e.value!r}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Every file is written whole or not at all, so nothing is lost: the stages
        # done are kept, and a training restarts at its last finished epoch.
        print("\ninterrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
