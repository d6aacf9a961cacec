"""results.json, report.md and the figures of a reproduction run.

Numbers come only from the stage files of the run; nothing here computes a
result, so the report cannot disagree with what was measured. Several seeds
are summarised as mean and (population) standard deviation over the seeds, and
only seeds of one configuration: a seed folder whose settings (its stages' own
included) differ from the command's is named and left out (``report_seeds``).
"""

import re
from pathlib import Path

import numpy as np

from npskip.exits import report as exits_report
from npskip.harness.config import NOT_RECORDED, config_dict, stage_settings
from npskip.harness.runfolder import (PAPER_STAGES, REBUILD_ADVICE, SETTINGS, RunFolderError,
                                      atomic_write, differences, read_json, read_record,
                                      record_changes, sha256_file, write_json)
from npskip.paper.pipeline import PAPER

# The top-images figures draw at most this many maps and images per map: a figure
# of 10 x 200 small axes took 92 s and 1.4 GB, and says no more than 10 x 10.
MAPS_DRAWN, TOP_DRAWN = 10, 10
STAGES = PAPER_STAGES
DROP = {"history", "stage_seconds", "made_from"}
# The files of a report (and their temporary names): --fresh deletes these and nothing else.
_NAMES = (r"results\.json|report\.md|training_curves\.png|cnn2_confusion\.png|"
          r"accuracy_vs_compute\.png|accuracy_compute_curve\.png|top_images_conv\d+\.png")
REPORT_FILES = re.compile(rf"(?:{_NAMES})|\.(?:{_NAMES})\.\d+\.tmp")


def is_report_file(name):
    return bool(REPORT_FILES.fullmatch(name))


def stage_names(config):
    """The stages a finished seed folder of ``config`` holds."""
    return STAGES + (tuple(s for _, s in exits_report.STAGE_NAMES) if config.exits else ())


def seed_folders(out):
    """{seed: folder} of every seed folder in ``out``: a folder named exactly as npskip
    names them (seed0, seed12), so that a copy named seed000 or seed001 never stands in
    for seed 0 or 1."""
    found = {}
    for p in Path(out).glob("seed*"):
        m = re.fullmatch(r"seed(0|[1-9]\d*)", p.name)
        if m and p.is_dir():
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def seed_differences(folder, config, stages=True):
    """How a seed folder's records differ from ``config`` (the seed aside), one line per
    setting; [] if they agree. Compared: its settings.json and, with stages, the
    settings of its own that each stage file of ``config``'s stages records (the exit
    heads', say). RunFolderError if settings.json is unreadable."""
    folder = Path(folder)
    cfg = config_dict(config)
    ours = {k: v for k, v in cfg.items() if k not in NOT_RECORDED}
    theirs = dict(read_json(folder / SETTINGS, REBUILD_ADVICE).get("settings", {}))
    theirs.pop("seed", None)
    diff = differences(theirs, ours)
    for stage in stage_names(config) if stages else ():
        made = read_record(folder / f"{stage}.json") or {}
        own = {k: v for k, v in (made.get("settings") or {}).items()
               if k in cfg and k not in ours and k != "seed"}
        diff += differences(own, {k: cfg[k] for k in own}, f"{stage}: ")
    return diff


def report_seeds(out, config):
    """The seed folders of ``out`` one report of ``config`` may summarise: ({seed: folder},
    {seed: why it is left out}): those a run of their seed with ``config`` would find
    finished (why_left_out)."""
    included, left_out = {}, {}
    for seed, folder in seed_folders(out).items():
        why = why_left_out(seed, folder, config)
        if why:
            left_out[seed] = why
        else:
            included[seed] = folder
    return included, left_out


def why_left_out(seed, folder, config):
    """Why a report of ``config`` cannot summarise ``folder``, the folder of ``seed``, or
    None if it can: it has settings.json, which records this seed and ``config``'s
    settings, and every stage file of ``config``'s stages, whose own record (settings,
    seed, data, the files it was built from and wrote) a run of that seed would accept."""
    if not (folder / SETTINGS).is_file():
        return f"no {SETTINGS}, so nothing records what made it (a run of seed {seed} writes it)"
    try:
        record = read_json(folder / SETTINGS, REBUILD_ADVICE)
        diff = seed_differences(folder, config)
    except RunFolderError as e:
        return str(e)
    why = ["made with other settings: " + "; ".join(diff)] if diff else []
    recorded_seed = (record.get("settings") or {}).get("seed")
    if recorded_seed != seed:
        why.append(f"its {SETTINGS} records seed {recorded_seed}, not {seed} (a copy of "
                   f"another seed's folder?)")
    missing = [s for s in stage_names(config) if not (folder / f"{s}.json").exists()]
    if why:
        return "; ".join(why)
    if missing:
        return f"not finished: {', '.join(missing)} still to run"
    faults = stage_faults(folder, config, seed, (record.get("data") or {}).get("arrays_sha256"))
    if faults:
        return (f"stage files that a run of seed {seed} would redo: " + "; ".join(faults))
    return None


def stage_faults(folder, config, seed, data_sha256):
    """The stage files of ``config``'s stages in ``folder`` that a run of ``seed`` would
    not accept, each with why (SeedRun.stage's checks): its record names other settings,
    another seed or other data, or a file it was built from or wrote changed since."""
    faults = []
    for stage in stage_names(config):
        made = read_record(folder / f"{stage}.json")
        now = {"settings": stage_settings(config, stage, seed), "data_sha256": data_sha256}
        why = record_changes(made, now) + (changed_files(folder, made) if made else [])
        if why:
            faults.append(f"{stage}.json: " + "; ".join(why))
    return faults


def changed_files(folder, made):
    """The files a stage's record ``made`` lists (built from, written) that are missing or
    whose SHA-256 differs from the record's."""
    out = []
    for kind in ("inputs", "outputs"):
        files = made.get(kind)
        if not isinstance(files, dict):
            out.append(f"its record lists no {kind}")
            continue
        for name, digest in files.items():
            path = folder / name
            if not path.is_file():
                out.append(f"{name} is missing")
            elif sha256_file(path) != digest:
                out.append(f"{name} changed since")
    return out


def seed_results(folder, config=None):
    """The stage results of one seed folder, histories left out, wall_fraction copied
    into cnn3_deploy (where results.json promises it). With a config whose exits are
    on, the exit stages go under "exits"."""
    out, seconds = {}, {}
    extra = exits_report.STAGE_NAMES if config is not None and config.exits else []
    for key, stage in [(s, s) for s in STAGES] + [("exits." + k, s) for k, s in extra]:
        path = Path(folder) / f"{stage}.json"
        if path.exists():
            raw = read_json(path, "delete it and rerun to redo that stage")
            node = out
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = {k: v for k, v in raw.items() if k not in DROP}
            # A training resumed in a later session only timed its last part in
            # stage_seconds; its history holds every epoch's time.
            trained = sum(raw["history"]["seconds"]) if "history" in raw else 0.0
            seconds[stage] = max(raw.get("stage_seconds", 0.0), trained)
    out["timing"] = {"seconds_by_stage": seconds, "seconds_total": sum(seconds.values())}
    if "efficiency" in out and "cnn3_deploy" in out:
        eff = out["efficiency"]
        out["cnn3_deploy"]["wall_fraction"] = eff["wall_fraction"]
        out["cnn3_deploy"]["multiply_add_fraction_with_router"] = eff["multiply_add_fraction_with_router"]
    return out


def _flatten(d, prefix=""):
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def _unflatten(flat):
    out = {}
    for key, v in flat.items():
        node = out
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    return out


def summarize(config, per_seed, left_out=None):
    """results.json content: the figures (mean over seeds), their std, and every seed's own."""
    flats = [_flatten(r) for r in per_seed.values()]
    if len(flats) == 1:                 # one seed: its own figures, exactly as measured
        mean, std = flats[0], None
    else:
        mean, std = {}, {}
        # A figure only some seeds have (a stage one seed has not run yet) is left
        # out rather than averaged over the seeds that happen to have it.
        for key in [k for k in flats[0] if all(k in f for f in flats)]:
            values = [f[key] for f in flats]
            try:
                # None is not a number (NumPy would make it NaN): e.g. the threshold of
                # a seed whose operating point fell back to CNN1
                if any(v is None for v in values):
                    raise TypeError("None among the values")
                arr = np.array(values, dtype=np.float64)
            except (TypeError, ValueError):
                # words (a label name, a note): kept if every seed agrees, else listed
                mean[key] = values[0] if all(v == values[0] for v in values) else values
                continue
            mean[key] = arr.mean(axis=0).tolist() if arr.ndim > 1 else float(arr.mean())
            std[key] = arr.std(axis=0).tolist() if arr.ndim > 1 else float(arr.std())
    results = _unflatten(mean)
    results.update({"config": config_dict(config), "seeds": list(per_seed), "paper": PAPER,
                    "std_over_seeds": _unflatten(std) if std is not None else None,
                    "per_seed": {str(s): r for s, r in per_seed.items()},
                    "left_out": {str(s): why for s, why in (left_out or {}).items()}})
    return results


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _acc_cell(results, key, n_seeds):
    """'98.91% ± 0.05 (3 seeds, 10000 test images each)' or with the 95% interval for one seed."""
    node = results
    for p in key.split("."):
        node = node[p]
    text = _pct(node["test_accuracy"])
    if n_seeds > 1:
        sd = results["std_over_seeds"]
        for p in key.split("."):
            sd = sd[p]
        text += f" ± {100 * sd['test_accuracy']:.2f} ({n_seeds} seeds)"
    else:
        lo, hi = node["ci95"]
        text += f" (95% CI {100 * lo:.1f}-{100 * hi:.1f})"
    return text + f", n = {node['test_count']:.0f}"


def markdown(results):
    """report.md's text."""
    n = len(results["seeds"])
    c2, d3 = results["cnn2"], results["cnn3_deploy"]
    eff, ctrl, cfg = results["efficiency"], results["controls"], results["config"]
    lines = [
        f"# npskip reproduction on {cfg['dataset']}",
        "",
        f"Seeds {results['seeds']}; widths {cfg['widths']}; {cfg['epochs']} epochs; batch "
        f"{cfg['batch_size']}; ranking of the first {cfg['maps']} maps, top {cfg['top']} images"
        + (f"; **subset: first {cfg['limit']} training images**" if cfg.get("limit") else "")
        + ". Figures are means over seeds (± standard deviation across seeds) or, for one seed, "
          "with a 95% Wilson interval; n is the number of test images."
        + "".join(f" **Left out: seed {s}**, {why}." for s, why in
                  results.get("left_out", {}).items()),
        "",
        "| quantity | paper (MNIST) | npskip |",
        "| --- | --- | --- |",
        f"| CNN1 test accuracy | 98% | {_acc_cell(results, 'cnn1', n)} |",
        f"| labelled images (unique), per label 0/1/2 | 300 picks | "
        f"{results['ranking']['unique_images']:.0f}, "
        f"{' / '.join(f'{v:.0f}' for v in results['ranking']['label_counts'])} |",
        f"| CNN2 (router) test accuracy | 62% | {_acc_cell(results, 'cnn2', n)}; "
        f"majority-label baseline {_pct(c2['majority_baseline'])} |",
        f"| CNN3, paper protocol (labelled images only) | close to 100% | "
        f"{_acc_cell(results, 'cnn3_paper', n)} |",
        f"| CNN3, deploy protocol (full test set, CNN2's routes) | - | "
        f"{_acc_cell(results, 'cnn3_deploy', n)} |",
        f"| multiply-adds vs CNN1, router excluded | \"improved\" | "
        f"{eff['multiply_add_fraction_without_router']:.3f} |",
        f"| multiply-adds vs CNN1, router included | not counted | "
        f"{eff['multiply_add_fraction_with_router']:.3f} |",
        f"| wall-clock of router + CNN3 vs CNN1 (same run) | not measured | "
        f"{eff['wall_fraction']:.3f} |",
        "",
        f"CNN3-deploy test routes 0/1/2: {' / '.join(f'{v:.0f}' for v in d3['route_counts'])}. "
        f"Compute time per seed: {results['timing']['seconds_total'] / 60:.0f} min (all stages, "
        f"training epochs included even when resumed).",
        "",
        "## Controls (CNN3-deploy on the same test set)",
        "",
        "| routing | accuracy | multiply-adds vs CNN1 (router excluded) |",
        "| --- | --- | --- |",
    ]
    for name, row in ctrl.items():
        if isinstance(row, dict) and "test_accuracy" in row:
            lines.append(f"| {name} | {_pct(row['test_accuracy'])} | {row['multiply_add_fraction']:.3f} |")
    lines += ["", "## What holds", "", verdict(results), ""]
    lines += exits_report.markdown(results)
    return "\n".join(lines)


def verdict(results):
    """A plain paragraph comparing our figures with the paper's claims."""
    c1, c2 = results["cnn1"]["test_accuracy"], results["cnn2"]
    p3, d3 = results["cnn3_paper"], results["cnn3_deploy"]
    eff, ctrl = results["efficiency"], results["controls"]
    s = []
    if results["config"]["dataset"] == "mnist":
        s.append(f"CNN1 reaches {_pct(c1)} against the paper's 98%: "
                 + ("the baseline holds." if c1 >= 0.98 else "below the paper's figure."))
    else:
        s.append(f"The paper's figures are for MNIST; on {results['config']['dataset']} they are "
                 f"a reference, not a target. CNN1 reaches {_pct(c1)}.")
    lo, hi = c2["ci95"]
    if c2["test_accuracy"] <= c2["majority_baseline"]:
        against = "it does not beat that baseline"
    elif lo <= c2["majority_baseline"]:
        against = "the baseline lies inside its interval, so at this sample size the two cannot be told apart"
    else:
        against = "it beats that baseline"
    s.append(f"The router scores {_pct(c2['test_accuracy'])} on only {c2['test_count']:.0f} test "
             f"images (paper: 62%), against {_pct(c2['majority_baseline'])} for always guessing "
             f"the commonest label; " + against +
             f", and with so few test images its 95% interval runs from {_pct(lo)} to {_pct(hi)}"
             + (" (per-seed intervals, averaged)." if len(results["seeds"]) > 1 else "."))
    s.append(f"CNN3 under the paper's protocol scores {_pct(p3['test_accuracy'])} on "
             f"{p3['test_count']:.0f} labelled test images; the paper's 'close to 100%' "
             + ("holds." if p3["test_accuracy"] >= 0.98 else "does not hold here.")
             + " That protocol tests on images picked by CNN1's activations, which a new image "
               "does not have, so it says little about deployment.")
    s.append(f"Deployed (CNN2 routes every test image), CNN3 scores {_pct(d3['test_accuracy'])} "
             f"against CNN1's {_pct(c1)}, and random routes in the same proportions score "
             f"{_pct(ctrl['random_cnn2_proportions']['test_accuracy'])}.")
    s.append(f"Compute: CNN3 alone needs {eff['multiply_add_fraction_without_router']:.2f} of CNN1's "
             f"multiply-adds, but with the router counted {eff['multiply_add_fraction_with_router']:.2f}, "
             f"and measured wall-clock is {eff['wall_fraction']:.2f} of CNN1's: "
             + ("the efficiency claim holds." if eff["multiply_add_fraction_with_router"] < 1
                and eff["wall_fraction"] < 1 else
                "with the router paid for, the paper's efficiency claim does not hold.")
             + f" The oracle routing ({_pct(ctrl['oracle']['test_accuracy'])} at "
               f"{ctrl['oracle']['multiply_add_fraction']:.2f} of the multiply-adds) shows how much a "
               "better router could save.")
    return " ".join(s)


# --------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------

def write_figures(out, seed_folder, x_train, results):
    """PNGs from one seed's folder: training curves, top images per layer, CNN2's confusion
    matrix, accuracy against compute. Returns the list of files written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, seed_folder = Path(out), Path(seed_folder)
    written = []
    for name, draw in (("training_curves.png", lambda: training_curves(seed_folder, plt)),
                       ("cnn2_confusion.png", lambda: cnn2_confusion(results, plt)),
                       ("accuracy_vs_compute.png", lambda: accuracy_vs_compute(results, plt))):
        fig = draw()
        fig.tight_layout()
        atomic_write(out / name, lambda f: fig.savefig(f, format="png", dpi=90))
        plt.close(fig)
        written.append(name)
    tops = np.load(seed_folder / "ranking.npz", allow_pickle=False)["tops"]   # (L, M, K)
    written += draw_top_images(out, tops, x_train)
    return written + exits_report.figure(out, results, plt)


def training_curves(seed_folder, plt):
    """Loss and accuracy per epoch of the three trainings, training and validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for stage in ("cnn1", "cnn3_deploy", "cnn2"):
        path = seed_folder / f"{stage}.json"
        if not path.exists():
            continue
        h = read_json(path, "delete it and rerun to redo that stage")["history"]
        epochs = np.arange(1, len(h["loss"]) + 1)
        axes[0].plot(epochs, h["loss"], label=f"{stage} train")
        axes[1].plot(epochs, h["accuracy"], label=f"{stage} train")
        if h["val_accuracy"][0] is not None:
            axes[0].plot(epochs, h["val_loss"], "--", label=f"{stage} val")
            axes[1].plot(epochs, h["val_accuracy"], "--", label=f"{stage} val")
    axes[0].set(xlabel="epoch", ylabel="loss", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="accuracy")
    axes[1].legend(fontsize=7)
    return fig


def cnn2_confusion(results, plt):
    """CNN2's confusion matrix on its test images: activation label against prediction."""
    cm = np.array(results["cnn2"]["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center")
    ax.set(xlabel="predicted route", ylabel="activation label",
           title=f"CNN2 on {results['cnn2']['test_count']:.0f} test images")
    return fig


def accuracy_vs_compute(results, plt):
    """CNN3-deploy under every routing of the controls stage, and with CNN2 counted."""
    eff = results["efficiency"]
    fig, ax = plt.subplots(figsize=(6, 4))
    router = eff["multiply_add_fraction_with_router"] - eff["multiply_add_fraction_without_router"]
    for name, row in results["controls"].items():
        if isinstance(row, dict) and "test_accuracy" in row:
            ax.scatter(row["multiply_add_fraction"], 100 * row["test_accuracy"], label=name)
    ax.scatter(eff["multiply_add_fraction_with_router"],
               100 * results["cnn3_deploy"]["test_accuracy"], marker="x", color="k",
               label="cnn2 routes, router counted")
    ax.set(xlabel="multiply-adds per image / CNN1's", ylabel="test accuracy (%)",
           title=f"accuracy against compute (router adds {router:.2f})")
    ax.legend(fontsize=7)
    return fig


def draw_top_images(out, tops, x_train):
    """top_images_conv<k>.png: the strongest images of each ranked map, at most
    MAPS_DRAWN maps by TOP_DRAWN images. tops: (layers, maps, top) indices into x_train."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, written = Path(out), []
    out.mkdir(parents=True, exist_ok=True)
    for layer, grid in enumerate(tops):
        grid = grid[:MAPS_DRAWN, :TOP_DRAWN]
        m, k = grid.shape
        # One mosaic, one imshow (a row per map, a one-pixel white seam between images):
        # a hundred small axes took seconds per figure.
        h, w, c = x_train.shape[1:]
        mosaic = np.ones((m * (h + 1) - 1, k * (w + 1) - 1, c), dtype=np.float32)
        for i in range(m):
            for j in range(k):
                mosaic[i * (h + 1):i * (h + 1) + h, j * (w + 1):j * (w + 1) + w] = \
                    x_train[grid[i, j]]
        fig, ax = plt.subplots(figsize=(k * 0.8, m * 0.8))
        ax.imshow(mosaic[..., 0] if c == 1 else mosaic, cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks(np.arange(m) * (h + 1) + h / 2, [f"map {i}" for i in range(m)], fontsize=6)
        fig.suptitle(f"conv{layer + 1}: top {k} images of each of the first {m} maps"
                     + (f" (of top {tops.shape[2]}, {tops.shape[1]} maps ranked)"
                        if grid.shape != tops.shape[1:] else ""), fontsize=9)
        name = f"top_images_conv{layer + 1}.png"
        fig.tight_layout()
        atomic_write(out / name, lambda f: fig.savefig(f, format="png", dpi=90))
        plt.close(fig)
        written.append(name)
    return written


def write_report(out, config, seed_folders, x_train=None, figures_from=None, left_out=None):
    """Write results.json, report.md and (if x_train is given) the figures into ``out``.

    seed_folders: {seed: folder}, every one finished and made with ``config``'s
    settings (report_seeds); left_out: {seed: why}, named in both files.
    figures_from: the seed folder x_train belongs to (default the first). Everything
    is built before anything is written, and each file is written atomically: a
    failure leaves the old report.
    """
    per_seed = {seed: seed_results(folder, config) for seed, folder in seed_folders.items()}
    results = summarize(config, per_seed, left_out)
    text = markdown(results)
    write_json(Path(out) / "results.json", results)
    atomic_write(Path(out) / "report.md", lambda f: f.write(text.encode()))
    if x_train is not None:
        write_figures(out, figures_from or next(iter(seed_folders.values())), x_train, results)
    return results
