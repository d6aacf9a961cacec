"""The report's section on the early exits: the accuracy-compute curve and its tables.

As in ``npskip.report``, every number is read from the stage files; nothing is
recomputed here.
"""

from pathlib import Path

import numpy as np

from npskip.exits.stages import RANDOM_DRAWS, TARGET, meets_target
from npskip.harness.runfolder import atomic_write

# (name in results.json under "exits", stage file stem)
STAGE_NAMES = [("heads", "exits"), ("curve", "exit_curve")]


def _pct(x):
    return f"{100 * x:.2f}%"


def _pts(x):
    return f"{round(100 * x, 2) + 0.0:+.2f}"       # + 0.0: no "-0.00"


def _seed_curves(results):
    """[(seed, that seed's results)] of every seed whose exit_curve stage ran."""
    return [(s, r) for s, r in results.get("per_seed", {}).items()
            if "curve" in r.get("exits", {})]


def markdown(results):
    """Lines of report.md for the early exits (empty if they did not run)."""
    ext = results.get("exits")
    if not ext or "curve" not in ext:
        return []
    n_seeds = len(results["seeds"])
    means = f"; means over {n_seeds} seeds." if n_seeds > 1 else "."
    lines = [
        "## Beyond the paper: early exits",
        "",
        f"CNN1, unchanged, with an exit head after each conv layer but the last "
        f"(npskip.exits; {head_words(results['config'])}, trained "
        f"{results['config'].get('exit_epochs')} epochs with CNN1 frozen). Exit k reads conv "
        f"layer k; an image leaves at the first exit whose top softmax probability reaches "
        f"the threshold t and never enters the later conv layers; t = 1 is CNN1 itself. The "
        f"heads passed are counted in the multiply-adds. Test set: "
        f"{ext['curve']['timed_images']:.0f} images" + means,
        "",
    ]
    return (lines + comparison_table(results) + [""] + rule_table(results) + [""]
            + curve_table(ext["curve"], n_seeds) + ["", verdict(results), ""])


def comparison_table(results):
    """CNN1, the paper's routing, each exit alone, the oracle and the rule's choice."""
    cv, heads = results["exits"]["curve"], results["exits"]["heads"]
    eff, d3, p = results["efficiency"], results["cnn3_deploy"], cv["operating_point"]
    lines = [
        "| on the test set | accuracy | multiply-adds vs CNN1 (heads included) | wall-clock vs CNN1 |",
        "| --- | --- | --- | --- |",
        f"| CNN1 | {_pct(results['cnn1']['test_accuracy'])} | 1.000 | 1.000 |",
        f"| paper's router (CNN2) + CNN3-deploy | {_pct(d3['test_accuracy'])} | "
        f"{eff['multiply_add_fraction_with_router']:.3f} | {eff['wall_fraction']:.3f} |",
    ]
    for k, (a, f) in enumerate(zip(heads["exit_test_accuracy"],
                                   heads["exit_multiply_add_fraction"]), 1):
        lines.append(f"| every image leaving at exit {k} | {_pct(a)} | {f:.3f} | - |")
    return lines + [
        f"| oracle (first exit that is right) | {_pct(cv['oracle']['test_accuracy'])} | "
        f"{cv['oracle']['multiply_add_fraction']:.3f} | - |",
        f"| **the rule's choice** (per seed below) | **{_pct(p['test_accuracy'])}** | "
        f"**{p['multiply_add_fraction']:.3f}** | **{p['wall_fraction']:.3f}** |",
    ]


def rule_table(results):
    """The rule in words, then its choice seed by seed."""
    sel = results["exits"]["curve"]["selection"]
    return [
        f"**The rule** (npskip.exits.selection, validation split only): at each threshold, "
        f"the cascade and CNN1 are compared image by image on the same "
        f"{sel['evidence']['n']:.0f} validation images; walking down from t = 1, a threshold "
        f"is accepted when the {100 * sel['confidence']:.0f}% upper bound of its accuracy loss "
        f"against CNN1, plus the test noise predicted from its own validation disagreements, "
        f"is within {100 * sel['tolerance']:.1f} points (and every higher threshold's was), "
        f"and the accepted one with the fewest multiply-adds is taken if it needs at most "
        f"{sel['cost_limit']:.3g} of CNN1's; otherwise CNN1 itself is used. The wall-clock "
        f"measured on validation is shown as a check; it is not decided on. Seed by seed:",
        "",
        "| seed | choice | validation: exits - CNN1, points (paired; mean and one-sided 95% "
        "bounds, normal) | exact 95% bound on the loss + predicted test noise | test accuracy "
        "(CNN1's) | test: exits - CNN1 (± 1 s.e.) | multiply-adds | wall-clock | meets the "
        "target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ] + [per_seed_row(seed, r["exits"]["curve"]) for seed, r in _seed_curves(results)]


def curve_table(cv, n_seeds):
    """One row per threshold: the test curve beside the validation evidence the rule saw."""
    c, ev = cv["curve"], cv["selection"]["evidence"]
    exits = " / ".join(str(k) for k in range(1, len(c["exit_counts"][0]) + 1))
    lines = [
        "The curve (threshold t: each image leaves at the first exit whose top probability "
        "reaches t; validation columns are what the rule sees):",
        "",
        f"| t | images leaving at exit {exits} | accuracy | random exits, same mix | "
        "multiply-adds | wall-clock | validation: exits - CNN1 (points) | its exact loss bound "
        "+ predicted test noise | validation wall-clock | accepted / under the cost limit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, t in enumerate(c["threshold"]):
        lines.append(f"| {t:.5g} | {' / '.join(f'{v:.0f}' for v in c['exit_counts'][i])} | "
                     f"{_pct(c['test_accuracy'][i])} | {_pct(c['random_test_accuracy'][i])} | "
                     f"{c['multiply_add_fraction'][i]:.3f} | {c['wall_fraction'][i]:.3f} | "
                     f"{_pts(ev['exited_minus_cnn1_mean'][i])} | "
                     f"{100 * ev['loss_upper'][i]:.2f} + {100 * ev['test_noise'][i]:.2f} | "
                     f"{c['val_wall_fraction'][i]:.2f} | "
                     f"{_share(ev['accepted'][i], n_seeds)} / {_share(ev['cheaper'][i], n_seeds)} |")
    return lines


def _share(x, n_seeds):
    """A per-threshold yes/no, or over seeds the fraction of seeds (mean of booleans)."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    return f"{round(x * n_seeds):.0f} of {n_seeds}" if n_seeds > 1 else ("yes" if x else "no")


def head_words(cfg):
    """What an exit head is, in words, from the config."""
    hidden, pool = cfg.get("exit_hidden", 0), cfg.get("exit_pool", 1)
    pooled = f"each averaging its maps over {pool}x{pool} blocks, then " if pool > 1 else "each "
    return pooled + (f"a dense layer of {hidden} units, ReLU and a dense layer to the classes"
                     if hidden else "one dense layer to the classes")


def per_seed_row(seed, cv):
    """One seed's line of the rule's table, from its curve stage."""
    p = cv["operating_point"]
    t = p["test_paired_difference"]
    if p["choice"] == "cnn1":
        choice, val, bound = "**CNN1** (fallback)", p["decision"], "-"
    else:
        v = p["val_evidence"]
        choice = f"t = {p['threshold']:.4g}"
        val = (f"{_pts(v['mean'])} [{_pts(v['low'])}, {_pts(v['high'])}]; disagree on "
               f"{v['a_only']:.0f} + {v['b_only']:.0f} of {v['n']:.0f}")
        bound = f"{100 * v['loss_upper']:.2f} + {100 * v['test_noise']:.2f}"
    return (f"| {seed} | {choice} | {val} | {bound} | {_pct(p['test_accuracy'])} "
            f"({_pct(p['cnn1_test_accuracy'])}) | {_pts(t['mean'])} ± {100 * t['se']:.2f} | "
            f"{p['multiply_add_fraction']:.3f} | {p['wall_fraction']:.3f} | "
            f"{'yes' if p['meets_target'] else 'no'} |")


def verdict(results):
    c = results["exits"]["curve"]["curve"]
    s = [f"Target: accuracy within {100 * TARGET['accuracy_gap']:.1f} points of CNN1 at no more "
         f"than {TARGET['multiply_add_fraction']} of its multiply-adds (heads included) and "
         f"{TARGET['wall_fraction']} of its wall-clock."]
    seeds = _seed_curves(results)
    points = [r["exits"]["curve"]["operating_point"] for _, r in seeds]
    met = sum(p["meets_target"] for p in points)
    fell_back = sum(p["choice"] == "cnn1" for p in points)
    slower = sum(p["wall_fraction"] > 1 for p in points)
    s.append(f"The rule's choice meets it on {met} of {len(points)} seed(s); it fell back to "
             f"CNN1 on {fell_back}; it chose a path slower than CNN1 on {slower}.")
    per_seed = []
    for _, r in seeds:
        cs, a = r["exits"]["curve"]["curve"], r["cnn1"]["test_accuracy"]
        per_seed.append([t for i, t in enumerate(cs["threshold"])
                         if meets_target(a, cs["test_accuracy"][i], cs["multiply_add_fraction"][i],
                                         cs["wall_fraction"][i])])
    s.append("Curve points that meet it on the test set (which the rule does not see), seed by "
             "seed: " + "; ".join(("t = " + ", ".join(f"{t:.5g}" for t in ts)) if ts else "none"
                                  for ts in per_seed) + ".")
    gain = np.array(c["test_accuracy"]) - np.array(c["random_test_accuracy"])
    mixed = [i for i, counts in enumerate(c["exit_counts"]) if max(counts) < sum(counts)]
    ahead = sum(gain[i] > 0.001 for i in mixed)
    s.append(f"Against random exits in the same mix (the mean of {RANDOM_DRAWS} shuffles of "
             f"the exits taken), the heads' choice is ahead by more than 0.1 points at {ahead} "
             f"of the {len(mixed)} thresholds that mix exits (gains {_pts(gain.min())} to "
             f"{_pts(gain.max())} points along the curve).")
    return " ".join(s)


def figure(out, results, plt):
    """accuracy_compute_curve.png: accuracy against multiply-adds and against wall-clock."""
    ext = results.get("exits")
    if not ext or "curve" not in ext:
        return []
    cv, heads = ext["curve"], ext["heads"]
    c = cv["curve"]
    cnn1 = 100 * results["cnn1"]["test_accuracy"]
    paper = (results["efficiency"]["multiply_add_fraction_with_router"],
             results["efficiency"]["wall_fraction"], 100 * results["cnn3_deploy"]["test_accuracy"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    for ax, key, label in ((axes[0], "multiply_add_fraction", "multiply-adds / CNN1's (heads included)"),
                           (axes[1], "wall_fraction", "wall-clock / CNN1's (same run)")):
        acc = 100 * np.array(c["test_accuracy"])
        ax.plot(c[key], acc, "o-", ms=3, label="exits, threshold swept")
        if key == "multiply_add_fraction":
            ax.plot(c[key], 100 * np.array(c["random_test_accuracy"]), "s--", ms=3,
                    label="random exits, same mix")
            ax.scatter(heads["exit_multiply_add_fraction"],
                       100 * np.array(heads["exit_test_accuracy"]), marker="^",
                       label="one exit for all")
            ax.scatter(cv["oracle"]["multiply_add_fraction"], 100 * cv["oracle"]["test_accuracy"],
                       marker="*", s=80, label="oracle")
        ax.scatter(1.0, cnn1, marker="D", color="k", label="CNN1")
        ax.scatter(paper[0 if key == "multiply_add_fraction" else 1], paper[2], marker="x", color="r",
                   label="paper's router + CNN3-deploy")
        op = cv["operating_point"]
        ax.scatter(op[key], 100 * op["test_accuracy"], s=120, facecolors="none",
                   edgecolors="g", label="the rule's choice (on validation)")
        # the target: within 0.2 points of CNN1 at <= 0.4 of its multiply-adds / 0.55 of its time
        ax.fill_between([0, TARGET[key]], cnn1 - 100 * TARGET["accuracy_gap"], 100,
                        color="green", alpha=0.08, label="target region")
        ax.set(xlabel=label, xlim=(0, max(paper[0 if key == "multiply_add_fraction" else 1],
                                          max(c[key])) + 0.1))
    lowest = min(np.min(c["test_accuracy"]), np.min(heads["exit_test_accuracy"]))
    highest = max(np.max(c["test_accuracy"]), cv["oracle"]["test_accuracy"],
                  results["cnn1"]["test_accuracy"])
    axes[0].set(ylabel="test accuracy (%)",
                ylim=(max(0, 100 * lowest - 1), min(100, 100 * highest + 0.5)))
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="center right")
    fig.suptitle(f"{results['config']['dataset']}: accuracy against compute (early exits)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    atomic_write(Path(out) / "accuracy_compute_curve.png",
                 lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)
    return ["accuracy_compute_curve.png"]
