"""The report's section on the extension: the accuracy-compute curve and its table.

As in ``npskip.report``, every number is read from the stage files; nothing is
recomputed here.
"""

from pathlib import Path

import numpy as np

from .extension import RANDOM_DRAWS, TARGET, meets_target, suffix


def stage_names(config):
    """The extension's stage files for this config: (name in results.json, file stem)."""
    if config.router == "none":
        return []
    s = suffix(config)
    if config.router == "exit":
        return [("exits", "exits"), ("curve", f"curve_{s}")]
    return [("cnn3_any", "cnn3_any"), ("behaviour", "behaviour"), ("router", f"router_{s}"),
            ("curve", f"curve_{s}")]


def _pct(x):
    return f"{100 * x:.2f}%"


def _pts(x):
    return f"{round(100 * x, 2) + 0.0:+.2f}"       # + 0.0: no "-0.00"


def _seed_curves(results):
    """[(seed, that seed's results)] of every seed whose curve stage ran."""
    return [(s, r) for s, r in results.get("per_seed", {}).items()
            if "curve" in r.get("extension", {})]


def markdown(results):
    """Lines of report.md for the extension (empty if it did not run)."""
    ext = results.get("extension")
    if not ext or "curve" not in ext:
        return []
    cv = ext["curve"]
    c = cv["curve"]
    cnn1 = results["cnn1"]["test_accuracy"]
    eff, d3 = results["efficiency"], results["cnn3_deploy"]
    n_seeds = len(results["seeds"])
    means = f"; means over {n_seeds} seeds." if n_seeds > 1 else "."
    if cv["router"] == "exit":
        ex = ext["exits"]
        routes, what = ex, "CNN1 with exits, every image leaving at exit"
        lines = [
            "## Beyond the paper: CNN1 decides its own route (early exits)",
            "",
            f"CNN1, unchanged, with an exit head after each conv layer but the last "
            f"(npskip.exits; {head_words(results['config'])}, trained "
            f"{results['config'].get('exit_epochs')} epochs with CNN1 frozen). An image leaves at the first head whose top softmax probability "
            f"reaches the threshold t and never enters the later conv layers; t = 1 is CNN1 "
            f"itself. No router: the heads passed are counted in the multiply-adds. Test set: "
            f"{cv['timed_images']:.0f} images" + means,
        ]
    else:
        any3, beh, router = ext["cnn3_any"], ext["behaviour"], ext["router"]
        routes, what = any3, "CNN3-any, every image on route"
        lines = [
            f"## Beyond the paper: {cv['labels']} labels, {cv['router']} router",
            "",
            f"CNN3-any is CNN1's architecture trained with a fresh random route per image each "
            f"epoch ({training_words(results['config'])}). Behaviour labels (training images, "
            f"confidence {beh['confidence']}): routes "
            f"0/1/2 = {' / '.join(f'{v:.0f}' for v in beh['train_label_counts'])}. The router "
            f"costs {cv['router_flops_fraction']:.3f} of CNN1's multiply-adds and predicts the "
            f"labels of {router['test_count']:.0f} test images with accuracy "
            f"{_pct(router['test_accuracy'])} (majority label "
            f"{_pct(router['majority_baseline'])}). Test set: {cv['timed_images']:.0f} images"
            + means,
        ]
    lines += [
        "",
        "| on the test set | accuracy | multiply-adds vs CNN1 (routing included) | wall-clock vs CNN1 |",
        "| --- | --- | --- | --- |",
        f"| CNN1 | {_pct(cnn1)} | 1.000 | 1.000 |",
        f"| paper's router (CNN2) + CNN3-deploy | {_pct(d3['test_accuracy'])} | "
        f"{eff['flops_fraction_with_router']:.3f} | {eff['wall_fraction']:.3f} |",
    ]
    for r, (a, f) in enumerate(zip(routes["route_test_accuracy"], routes["route_flops_fraction"])):
        lines.append(f"| {what} {r} | {_pct(a)} | {f:.3f} (no router) | - |")
    p = cv["operating_point"]
    lines += [
        f"| oracle route (cheapest right one) | {_pct(cv['oracle']['test_accuracy'])} | "
        f"{cv['oracle']['flops_fraction']:.3f} (no router) | - |",
        f"| **the rule's choice** (per seed below) | **{_pct(p['test_accuracy'])}** | "
        f"**{p['flops_fraction']:.3f}** | **{p['wall_fraction']:.3f}** |",
    ]
    if "previous_rule_point" in cv:
        q = cv["previous_rule_point"]
        lines.append(f"| original rule: cheapest t within 0.1 points of CNN1's validation "
                     f"accuracy, unpaired, no bound, no guard | {_pct(q['test_accuracy'])} | "
                     f"{q['flops_fraction']:.3f} | {q['wall_fraction']:.3f} |")
    sel = cv["selection"]
    lines += [
        "",
        f"**The rule** (npskip.selection, validation split only): at each threshold, the routed "
        f"network and CNN1 are compared image by image on the same "
        f"{sel['evidence']['n']:.0f} validation images; walking down from t = 1, a threshold "
        f"is accepted when the {100 * sel['confidence']:.0f}% upper bound of its accuracy loss "
        f"against CNN1, plus the test noise predicted from its own validation disagreements, "
        f"is within {100 * sel['tolerance']:.1f} points (and every higher threshold's was), "
        f"and the accepted one with the fewest "
        f"multiply-adds is taken if its routed path is predicted (from its multiply-adds, by "
        f"a cost model fitted on the build machine) to take at most {sel['wall_limit']} of "
        f"CNN1's time and needs fewer multiply-adds than CNN1; otherwise CNN1 itself is used. "
        f"The wall-clock measured on validation is shown beside the prediction as a check. "
        f"Seed by seed:",
        "",
        "| seed | choice | validation: routed - CNN1, points (paired; mean and one-sided 95% "
        "bounds, normal) | exact 95% bound on the loss + predicted test noise | test accuracy (CNN1's) | test: routed "
        "- CNN1 (± 1 s.e.) | multiply-adds | "
        "wall-clock | meets the target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [per_seed_row(seed, r["extension"]["curve"]) for seed, r in _seed_curves(results)]
    lines += [
        "",
        ("The curve (threshold t: each image leaves at the first exit whose top probability "
         "reaches t; " if cv["router"] == "exit" else
         "The curve (threshold t: each image takes the cheapest route whose cumulative router "
         "probability reaches t; ") + "validation columns are what the rule sees):",
        "",
        "| t | routes 0 / 1 / 2 | accuracy | random routes, same mix | multiply-adds | wall-clock "
        "| validation: routed - CNN1 (points) | its exact loss bound + predicted test noise "
        "| validation wall-clock: "
        "predicted / measured | accepted / under the wall limit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ev = sel["evidence"]
    noise = ev.get("test_noise", [0.0] * len(c["threshold"]))   # stage files before the reserve
    for i, t in enumerate(c["threshold"]):
        lines.append(f"| {t:.5g} | {' / '.join(f'{v:.0f}' for v in c['route_counts'][i])} | "
                     f"{_pct(c['test_accuracy'][i])} | {_pct(c['random_test_accuracy'][i])} | "
                     f"{c['flops_fraction'][i]:.3f} | {c['wall_fraction'][i]:.3f} | "
                     f"{_pts(ev['routed_minus_cnn1_mean'][i])} | "
                     f"{100 * ev['loss_upper'][i]:.2f} + {100 * noise[i]:.2f} | "
                     f"{ev['modelled_wall_fraction'][i]:.2f} / {c['val_wall_fraction'][i]:.2f} | "
                     f"{_share(ev['accepted'][i], n_seeds)} / {_share(ev['cheaper'][i], n_seeds)} |")
    lines += ["", verdict(results), ""]
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


def training_words(cfg):
    """How CNN3-any was trained, in words, from the config."""
    w = cfg.get("any_route_weights")
    words = ["routes drawn " + ("uniformly" if w is None else
                                "with probabilities " + " / ".join(f"{v:g}" for v in w)),
             "starting from " + ("CNN1's weights" if cfg.get("any_init") == "cnn1"
                                 else "fresh weights")]
    if cfg.get("any_distill_weight"):
        words.append(f"distilled from CNN1 (weight {cfg['any_distill_weight']:g}, temperature "
                     f"{cfg['any_temperature']:g})")
    return ", ".join(words)


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
        bound = f"{100 * v['loss_upper']:.2f} + {100 * v.get('test_noise', 0.0):.2f}"
    return (f"| {seed} | {choice} | {val} | {bound} | {_pct(p['test_accuracy'])} "
            f"({_pct(p['cnn1_test_accuracy'])}) | {_pts(t['mean'])} ± {100 * t['se']:.2f} | "
            f"{p['flops_fraction']:.3f} | {p['wall_fraction']:.3f} | "
            f"{'yes' if p['meets_target'] else 'no'} |")


def verdict(results):
    ext, cnn1 = results["extension"], results["cnn1"]["test_accuracy"]
    c = ext["curve"]["curve"]
    s = [f"Target: accuracy within {100 * TARGET['accuracy_gap']:.1f} points of CNN1 at no more "
         f"than {TARGET['flops_fraction']} of its multiply-adds (routing included) and "
         f"{TARGET['wall_fraction']} of its wall-clock."]
    seeds = _seed_curves(results)
    points = [r["extension"]["curve"]["operating_point"] for _, r in seeds]
    met = sum(p["meets_target"] for p in points)
    fell_back = sum(p["choice"] == "cnn1" for p in points)
    slower = sum(p["wall_fraction"] > 1 for p in points)
    s.append(f"The rule's choice meets it on {met} of {len(points)} seed(s); it fell back to "
             f"CNN1 on {fell_back}; it chose a path slower than CNN1 on {slower}.")
    per_seed = []
    for _, r in seeds:
        cs, a = r["extension"]["curve"]["curve"], r["cnn1"]["test_accuracy"]
        per_seed.append([t for i, t in enumerate(cs["threshold"])
                         if meets_target(a, cs["test_accuracy"][i], cs["flops_fraction"][i],
                                         cs["wall_fraction"][i])])
    s.append("Curve points that meet it on the test set (which the rule does not see), seed by "
             "seed: " + "; ".join(("t = " + ", ".join(f"{t:.5g}" for t in ts)) if ts else "none"
                                  for ts in per_seed) + ".")
    gain = np.array(c["test_accuracy"]) - np.array(c["random_test_accuracy"])
    mixed = [i for i, counts in enumerate(c["route_counts"]) if max(counts) < sum(counts)]
    ahead = sum(gain[i] > 0.001 for i in mixed)
    s.append(f"Against random routes in the same mix (the mean of {RANDOM_DRAWS} shuffles of "
             f"the routes), the routing is ahead by more than 0.1 points at {ahead} of the "
             f"{len(mixed)} thresholds that mix routes (gains {_pts(gain.min())} to "
             f"{_pts(gain.max())} points along the curve).")
    return " ".join(s)


def figure(out, results, plt):
    """accuracy_compute_curve.png: accuracy against multiply-adds and against wall-clock."""
    ext = results.get("extension")
    if not ext or "curve" not in ext:
        return []
    cv = ext["curve"]
    any3 = ext["exits"] if cv["router"] == "exit" else ext["cnn3_any"]
    c = cv["curve"]
    cnn1 = 100 * results["cnn1"]["test_accuracy"]
    paper = (results["efficiency"]["flops_fraction_with_router"],
             results["efficiency"]["wall_fraction"], 100 * results["cnn3_deploy"]["test_accuracy"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    for ax, key, label in ((axes[0], "flops_fraction", "multiply-adds / CNN1's (router included)"),
                           (axes[1], "wall_fraction", "wall-clock / CNN1's (same run)")):
        acc = 100 * np.array(c["test_accuracy"])
        ax.plot(c[key], acc, "o-", ms=3, label=("exits" if cv["router"] == "exit" else
                                                f"{cv['router']} router") + ", threshold swept")
        if key == "flops_fraction":
            ax.plot(c[key], 100 * np.array(c["random_test_accuracy"]), "s--", ms=3,
                    label="random routes, same mix")
            ax.scatter(any3["route_flops_fraction"], 100 * np.array(any3["route_test_accuracy"]),
                       marker="^", label=("one exit" if cv["router"] == "exit" else
                                          "CNN3-any, one route") + " for all")
            ax.scatter(cv["oracle"]["flops_fraction"], 100 * cv["oracle"]["test_accuracy"],
                       marker="*", s=80, label="oracle")
        ax.scatter(1.0, cnn1, marker="D", color="k", label="CNN1")
        ax.scatter(paper[0 if key == "flops_fraction" else 1], paper[2], marker="x", color="r",
                   label="paper's router + CNN3-deploy")
        for name, colour, words in (("operating_point", "g", "the rule's choice"),
                                    ("previous_rule_point", "m", "original rule's choice")):
            if name in cv:
                op = cv[name]
                ax.scatter(op[key], 100 * op["test_accuracy"], s=120, facecolors="none",
                           edgecolors=colour, label=words + " (on validation)")
        # the target: within 0.2 points of CNN1 at <= 0.4 of its multiply-adds / 0.55 of its time
        ax.fill_between([0, TARGET[key]], cnn1 - 100 * TARGET["accuracy_gap"], 100,
                        color="green", alpha=0.08, label="target region")
        ax.set(xlabel=label, xlim=(0, max(paper[0 if key == "flops_fraction" else 1],
                                          max(c[key])) + 0.1))
    lowest = min(np.min(c["test_accuracy"]), np.min(any3["route_test_accuracy"]))
    highest = max(np.max(c["test_accuracy"]), cv["oracle"]["test_accuracy"],
                  results["cnn1"]["test_accuracy"])
    axes[0].set(ylabel="test accuracy (%)",
                ylim=(max(0, 100 * lowest - 1), min(100, 100 * highest + 0.5)))
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="center right")
    fig.suptitle(f"{results['config']['dataset']}: accuracy against compute "
                 + ("(early exits)" if cv["router"] == "exit" else f"({cv['labels']} labels)"),
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    fig.savefig(Path(out) / "accuracy_compute_curve.png", dpi=90)
    plt.close(fig)
    return ["accuracy_compute_curve.png"]
