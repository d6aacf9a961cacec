"""The ``npskip`` command line.

    npskip train --dataset mnist --epochs 20        # CNN1 alone, the paper's baseline
    npskip reproduce --dataset mnist --seeds 0 1 2  # the whole paper, with a report
    npskip reproduce --dataset mnist --quick        # a first look in a couple of minutes

Every command writes into a run folder (``--out``) and resumes from what is
already there: finished stages are loaded, an interrupted training restarts at
its last finished epoch. A folder made with other settings is refused (use
another ``--out``, or ``--fresh`` to start the seeds given afresh); a file whose
record does not match the run is redone, with everything built from it
(npskip.harness.runfolder). Every argument is checked before any stage runs.
"""

import argparse
import dataclasses
import os
import re
import sys
import time
from pathlib import Path

# Every file is written whole or not at all, so a Ctrl-C loses nothing: the stages done
# are kept, and a training restarts at its last finished epoch.
INTERRUPTED = "\ninterrupted; rerun the same command to resume"

try:       # numpy and numba take a second to load: a Ctrl-C then gets the same message
    from npskip.engine.checks import ConfigError
    from npskip.exits import stages as exit_stages
    from npskip.harness import checkpoint
    from npskip.harness.config import STAGE_DEPENDS, Config, check_data
    from npskip.harness.data import DATASETS
    from npskip.harness.download import DataError
    from npskip.harness.runfolder import (FRESH_ADVICE, REBUILD_ADVICE, SETTINGS, FolderLock,
                                          RunFolderError, cannot_write, is_seed_file, probe,
                                          read_json, wipe)
    from npskip.paper.pipeline import SeedRun, load_data
    from npskip.report import (is_report_file, report_seeds, seed_differences, seed_folders,
                               write_report)
except KeyboardInterrupt:
    print(INTERRUPTED, file=sys.stderr)
    sys.exit(130)

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


EXIT_OPTIONS = ("exit_epochs", "exit_hidden", "exit_pool")


def make_config(args, seeds):
    """Config from the parsed arguments; an out-of-range one stops argparse (exit 2)
    with a message naming the option, before any data is read."""
    # train ranks nothing: its top images only need to fit its --limit
    top = getattr(args, "top_images", min(Config.top, args.limit or Config.top))
    given = [k for k in EXIT_OPTIONS if getattr(args, k, None) is not None]
    if given and args.no_exits:
        args.parser.error(f"argument {FLAGS[given[0]]}: not allowed with --no-exits (the exit "
                          f"heads it sets do not run)")
    try:
        return Config(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                      widths=args.widths, maps=getattr(args, "maps", 10), top=top,
                      val_fraction=args.val_fraction, limit=args.limit, seeds=list(seeds),
                      exits=not getattr(args, "no_exits", True),
                      **{k: getattr(args, k) for k in given})
    except ConfigError as e:
        args.parser.error(refusal(args, e))


def refusal(args, e):
    """'argument --epochs: expected ..., received ...' for ConfigError ``e``, naming the
    option of the command that was run (a setting it has no option for, by name)."""
    flag = "--seed" if e.name == "seeds" and args.command == "train" else FLAGS.get(e.name)
    action = next((a for a in args.parser._actions if flag in a.option_strings), None)
    if action is None:
        flag = f"{e.name} (a setting npskip {args.command} has no option for)"
    default = action is not None and action.default == e.value and \
        getattr(args, action.dest, None) == action.default       # not set by --quick
    return (f"argument {flag}: expected {e.expected}, received {shown(e.value)}"
            + (" (the default)" if default else ""))


def shown(value):
    """A value as the user typed it: widths as 16,16,32."""
    if isinstance(value, (tuple, list)) and value:
        return ",".join(str(v) for v in value)
    return repr(value)


class OutputError(Exception):
    """The standard output cannot be written (a full disk behind ``> file``, say)."""


def log(message):
    try:
        print(message, flush=True)
    except BrokenPipeError:
        raise                   # the reader left (| head): main ends quietly
    except OSError as e:
        raise OutputError(f"cannot write the output (standard output): {e.strerror or e}; "
                          f"the run stopped there: send the output elsewhere and rerun the "
                          f"same command to resume") from None


def folder_path(text, default):
    return Path(text).expanduser() if text else Path(default)


def cmd_train(args):
    config = make_config(args, [args.seed])
    out = folder_path(args.out, f"runs/cnn1-{args.dataset}-seed{args.seed}")
    # a file, unwritable or busy: said before any work
    probe(out, hint="Trainings side by side each need their own folder: another --out, or "
                    "another --seed with no --out.")
    config = with_folder_settings(config, out)
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


def with_folder_settings(config, out):
    """train's config, with the values the folder records (a seed folder of reproduce,
    say) of the settings CNN1 does not depend on (STAGE_DEPENDS["cnn1"]): train has no
    option for them, so they never refuse a folder whose CNN1 is this one."""
    path = Path(out) / SETTINGS
    if not path.is_file():
        return config
    recorded = read_json(path, REBUILD_ADVICE).get("settings", {})
    cnn1 = set(STAGE_DEPENDS["cnn1"])
    other = {f.name: recorded[f.name] for f in dataclasses.fields(config)
             if f.name in recorded and f.name not in cnn1}
    try:
        return dataclasses.replace(config, **other)
    except (ConfigError, TypeError):          # the folder's CNN1 settings differ: said next
        return config


def check_seed_folders(out, config, fresh):
    """Before any work: the seed folders to run can be locked and (unless started afresh)
    hold these settings; every other seed folder holds these settings, stage settings
    included, or (with fresh) is left alone and out of the report. Returns {seed: why}
    of the seeds left out; raises RunFolderError (one report holds one configuration)."""
    problems, left_out = [], {}
    for seed, folder in seed_folders(out).items():
        given = seed in config.seeds
        if (given and fresh) or not (folder / "settings.json").exists():
            continue                          # started afresh, or judged by SeedRun / the report
        try:
            diff = seed_differences(folder, config, stages=not given)
        except RunFolderError as e:
            if given or not fresh:
                raise
            diff = [str(e)]
        if diff and given:
            raise RunFolderError(f"{folder} was made with other settings:\n  "
                                 + "\n  ".join(diff) + "\n" + FRESH_ADVICE)
        if diff and fresh:
            left_out[seed] = "made with other settings: " + "; ".join(diff)
        elif diff:
            problems.append(f"{folder}:\n    " + "\n    ".join(diff))
    if problems:
        raise RunFolderError(
            f"{out} holds seeds made with other settings, and one report holds one "
            "configuration:\n  " + "\n  ".join(problems) + "\nUse another folder (--out DIR), "
            "or pass the settings they were made with; --fresh starts afresh only the seeds "
            "given (--seeds) and leaves the others alone and out of the report.")
    for seed in config.seeds:                 # a file, unwritable or busy: said now
        probe(out / f"seed{seed}", hint="Seeds run side by side each need their own seed "
                                        "(--seeds 0 in one command, --seeds 1 in the other).")
    return left_out


def start_afresh(out, seeds):
    """--fresh: delete npskip's files of the given seeds and the report, saying which."""
    for folder, owns in [(out / f"seed{s}", is_seed_file) for s in seeds] + [(out,
                                                                             is_report_file)]:
        if not folder.is_dir():
            continue
        with FolderLock(folder, wait=folder == out):
            deleted = wipe(folder, owns)
        if deleted:
            log(f"--fresh: deleted from {folder}: {', '.join(deleted)}")


def cmd_reproduce(args):
    if args.quick:
        args.limit = args.limit or QUICK["limit"]
        args.epochs = QUICK["epochs"] if args.epochs is None else args.epochs
    args.epochs = 20 if args.epochs is None else args.epochs
    config = make_config(args, args.seeds)
    out = folder_path(args.out, f"runs/reproduce-{args.dataset}" + ("-quick" if args.quick else ""))
    probe(out, wait=True)                     # a file or unwritable: said before any work
    for seed, why in check_seed_folders(out, config, args.fresh).items():
        log(f"seed {seed} left alone and out of the report: {why}")
    start = time.perf_counter()
    figures_from = None
    for seed in config.seeds:
        data = load_data(config, seed, args.data_dir, args.mirror)
        if figures_from is None:
            check_data(config, data)          # before anything is deleted or run
            if args.fresh:
                start_afresh(out, config.seeds)
        log(f"seed {seed}: {len(data[1])} training, {len(data[3])} validation, {len(data[5])} "
            f"test images of {args.dataset}; widths {config.widths}; {config.epochs} epochs")
        run = SeedRun(out / f"seed{seed}", config, seed, data, progress=not args.no_progress,
                      log=log)
        with run.lock:                        # one run per seed folder at a time
            run.run_all()
            exit_stages.run_all(run)
        if figures_from is None:
            figures_from = (run.folder, data[0])
    folders, results = report(out, config, figures_from)
    log(f"wrote {out / 'results.json'}, {out / 'report.md'} and figures for seeds "
        f"{list(folders)} ({time.perf_counter() - start:.0f} s this session)")
    return 0 if results else 1


def report(out, config, figures_from):
    """The report of every finished seed folder of this configuration present, so that
    seeds run side by side as separate commands end in one report (its lock makes the
    last writer see all); the others are named and left out. Returns (folders, results)."""
    with FolderLock(out, wait=True):
        folders, left_out = report_seeds(out, config)
        for seed, why in left_out.items():
            log(f"seed {seed}: left out of the report, {why}")
        report_config = dataclasses.replace(config, seeds=list(folders))
        results = write_report(out, report_config, folders, x_train=figures_from[1],
                               figures_from=figures_from[0], left_out=left_out)
    log((out / "report.md").read_text())
    return folders, results


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


def make_parser():
    """The ``npskip`` parser with its two commands, train and reproduce."""
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
    return parser


def main(argv=None):
    try:
        return run(make_parser().parse_args(widths_value_first(argv)))
    except BrokenPipeError:
        silence_stdout()        # the reader left (npskip ... | head): end quietly
        return 1
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


def silence_stdout():
    """Point the standard output at nothing, so that Python's last flush, at exit, does
    not fail again on it (the recipe of Python's documentation for SIGPIPE)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):          # not a file of the system (captured output)
        pass


def run(args):
    """Run the command; a known failure becomes one line on stderr and an exit code."""
    try:
        return args.func(args)
    except OutputError as e:
        silence_stdout()
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (DataError, checkpoint.CheckpointError, RunFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:                 # a range that needs the data (SeedRun checks)
        print(f"error: {refusal(args, e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except OSError as e:                     # a write outside runfolder.atomic_write
        print(f"error: {cannot_write(e.filename or 'a file', e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
