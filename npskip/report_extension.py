"""The report's section on the extension: the accuracy-compute curve and its table.

As in ``npskip.report``, every number is read from the stage files; nothing is
recomputed here.
"""

from pathlib import Path

import numpy as np

from .extension import TARGET, suffix


def stage_names(config):
    """The extension's stage files for this config: (name in results.json, file stem)."""
    if config.router == "none":
        return []
    s = suffix(config)
    return [("cnn3_any", "cnn3_any"), ("behaviour", "behaviour"), ("router", f"router_{s}"),
            ("curve", f"curve_{s}")]


def _pct(x):
    return f"{100 * x:.2f}%"


def meets_target(cnn1_acc, acc, flops, wall):
    return (acc >= cnn1_acc - TARGET["accuracy_gap"] and flops <= TARGET["flops_fraction"]
            and wall <= TARGET["wall_fraction"])


def _per_seed_points(results, key):
    """[(cnn1 accuracy, operating point)] of every seed, from results["per_seed"]."""
    out = []
    for r in results.get("per_seed", {}).values():
        point = r.get("extension", {}).get("curve", {}).get(key)
        if point is not None:
            out.append((r["cnn1"]["test_accuracy"], point))
    return out


def markdown(results):
    """Lines of report.md for the extension (empty if it did not run)."""
    ext = results.get("extension")
    if not ext or "curve" not in ext:
        return []
    any3, beh, router, cv = ext["cnn3_any"], ext["behaviour"], ext["router"], ext["curve"]
    c = cv["curve"]
    cnn1 = results["cnn1"]["test_accuracy"]
    eff, d3 = results["efficiency"], results["cnn3_deploy"]
    n_seeds = len(results["seeds"])
    lines = [
        f"## Beyond the paper: {cv['labels']} labels, {cv['router']} router",
        "",
        f"CNN3-any is CNN1's architecture trained with a fresh random route per image each "
        f"epoch. Behaviour labels (training images, confidence {beh['confidence']}): routes "
        f"0/1/2 = {' / '.join(f'{v:.0f}' for v in beh['train_label_counts'])}. The router "
        f"costs {cv['router_flops_fraction']:.3f} of CNN1's multiply-adds and predicts the "
        f"labels of {router['test_count']:.0f} test images with accuracy "
        f"{_pct(router['test_accuracy'])} (majority label {_pct(router['majority_baseline'])}). "
        f"Test set: {cv['timed_images']:.0f} images"
        + (f"; means over {n_seeds} seeds." if n_seeds > 1 else "."),
        "",
        "| on the test set | accuracy | multiply-adds vs CNN1 (router included) | wall-clock vs CNN1 |",
        "| --- | --- | --- | --- |",
        f"| CNN1 | {_pct(cnn1)} | 1.000 | 1.000 |",
        f"| paper's router (CNN2) + CNN3-deploy | {_pct(d3['test_accuracy'])} | "
        f"{eff['flops_fraction_with_router']:.3f} | {eff['wall_fraction']:.3f} |",
    ]
    for r, (a, f) in enumerate(zip(any3["route_test_accuracy"], any3["route_flops_fraction"])):
        lines.append(f"| CNN3-any, every image on route {r} | {_pct(a)} | {f:.3f} (no router) | - |")
    lines += [
        f"| CNN3-any, oracle route (cheapest right one) | {_pct(cv['oracle']['test_accuracy'])} | "
        f"{cv['oracle']['flops_fraction']:.3f} (no router) | - |",
    ]
    for key in ("operating_point", "operating_point_at_target_margin"):
        if key not in cv:
            continue
        p = cv[key]
        ts = " / ".join(f"{q['threshold']:.3g}" for _, q in _per_seed_points(results, key))
        lines += [
            f"| **operating point**, tolerance {100 * p['tolerance']:.1f} points on validation "
            f"(t = {ts}) | **{_pct(p['test_accuracy'])}** | "
            f"**{p['flops_fraction']:.3f}** | **{p['wall_fraction']:.3f}** |",
            f"| random routes in that point's mix | {_pct(p['random_test_accuracy'])} | "
            f"{p['flops_fraction']:.3f} | - |",
        ]
    lines += [
        "",
        "The curve (threshold t: each image takes the cheapest route whose cumulative router "
        "probability reaches t):",
        "",
        "| t | routes 0 / 1 / 2 | accuracy | random routes, same mix | multiply-adds | wall-clock |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, t in enumerate(c["threshold"]):
        lines.append(f"| {t:.3g} | {' / '.join(f'{v:.0f}' for v in c['route_counts'][i])} | "
                     f"{_pct(c['test_accuracy'][i])} | {_pct(c['random_test_accuracy'][i])} | "
                     f"{c['flops_fraction'][i]:.3f} | {c['wall_fraction'][i]:.3f} |")
    lines += ["", verdict(results), ""]
    return lines


def verdict(results):
    ext, cnn1 = results["extension"], results["cnn1"]["test_accuracy"]
    c = ext["curve"]["curve"]
    hits = [i for i in range(len(c["threshold"]))
            if meets_target(cnn1, c["test_accuracy"][i], c["flops_fraction"][i],
                            c["wall_fraction"][i])]
    s = [f"Target: accuracy within {100 * TARGET['accuracy_gap']:.1f} points of CNN1 at no more "
         f"than {TARGET['flops_fraction']} of its multiply-adds (router included) and "
         f"{TARGET['wall_fraction']} of its wall-clock."]
    for key in ("operating_point", "operating_point_at_target_margin"):
        if key not in ext["curve"]:
            continue
        p = ext["curve"][key]
        meets = meets_target(cnn1, p["test_accuracy"], p["flops_fraction"], p["wall_fraction"])
        seeds = _per_seed_points(results, key)
        by_seed = [meets_target(a, q["test_accuracy"], q["flops_fraction"], q["wall_fraction"])
                   for a, q in seeds]
        if len(seeds) > 1:
            s.append(f"The operating point chosen on validation with a {100 * p['tolerance']:.1f}-"
                     f"point tolerance meets it on {sum(by_seed)} of {len(seeds)} seeds (mean "
                     f"{_pct(p['test_accuracy'])} against CNN1's {_pct(cnn1)}, at "
                     f"{p['flops_fraction']:.2f} of the multiply-adds and "
                     f"{p['wall_fraction']:.2f} of the wall-clock).")
        else:
            s.append(f"The operating point chosen on validation with a {100 * p['tolerance']:.1f}-"
                     f"point tolerance " + ("meets it" if meets else "does not meet it")
                     + f": {_pct(p['test_accuracy'])} against CNN1's {_pct(cnn1)}, at "
                       f"{p['flops_fraction']:.2f} of the multiply-adds and "
                       f"{p['wall_fraction']:.2f} of the wall-clock.")
    per_seed = []
    for r in results.get("per_seed", {}).values():
        cs = r.get("extension", {}).get("curve", {}).get("curve")
        if cs:
            a = r["cnn1"]["test_accuracy"]
            per_seed.append([t for i, t in enumerate(cs["threshold"])
                             if meets_target(a, cs["test_accuracy"][i], cs["flops_fraction"][i],
                                             cs["wall_fraction"][i])])
    if len(per_seed) > 1:
        s.append("Curve points that meet it, seed by seed: "
                 + "; ".join(("t = " + ", ".join(f"{t:.3g}" for t in ts)) if ts else "none"
                             for ts in per_seed) + ".")
    else:
        s.append(f"{len(hits)} of the {len(c['threshold'])} curve points meet it on the test set"
                 + (" (thresholds " + ", ".join(f"{c['threshold'][i]:.3g}" for i in hits) + ")."
                    if hits else "."))
    gain = np.array(c["test_accuracy"]) - np.array(c["random_test_accuracy"])
    s.append(f"Against random routes with the same mix the router gains "
             f"{100 * gain.min():+.2f} to {100 * gain.max():+.2f} points along the curve, so its "
             f"choices " + ("carry information beyond the mix." if gain.max() > 0.001 else
                            "add little beyond the mix."))
    return " ".join(s)


def figure(out, results, plt):
    """accuracy_compute_curve.png: accuracy against multiply-adds and against wall-clock."""
    ext = results.get("extension")
    if not ext or "curve" not in ext:
        return []
    cv, any3 = ext["curve"], ext["cnn3_any"]
    c = cv["curve"]
    cnn1 = 100 * results["cnn1"]["test_accuracy"]
    paper = (results["efficiency"]["flops_fraction_with_router"],
             results["efficiency"]["wall_fraction"], 100 * results["cnn3_deploy"]["test_accuracy"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    for ax, key, label in ((axes[0], "flops_fraction", "multiply-adds / CNN1's (router included)"),
                           (axes[1], "wall_fraction", "wall-clock / CNN1's (same run)")):
        acc = 100 * np.array(c["test_accuracy"])
        ax.plot(c[key], acc, "o-", ms=3, label=f"{cv['router']} router, threshold swept")
        if key == "flops_fraction":
            ax.plot(c[key], 100 * np.array(c["random_test_accuracy"]), "s--", ms=3,
                    label="random routes, same mix")
            ax.scatter(any3["route_flops_fraction"], 100 * np.array(any3["route_test_accuracy"]),
                       marker="^", label="CNN3-any, one route for all")
            ax.scatter(cv["oracle"]["flops_fraction"], 100 * cv["oracle"]["test_accuracy"],
                       marker="*", s=80, label="oracle")
        ax.scatter(1.0, cnn1, marker="D", color="k", label="CNN1")
        ax.scatter(paper[0 if key == "flops_fraction" else 1], paper[2], marker="x", color="r",
                   label="paper's router + CNN3-deploy")
        for name, colour in (("operating_point", "g"), ("operating_point_at_target_margin", "m")):
            if name in cv:
                op = cv[name]
                ax.scatter(op[key], 100 * op["test_accuracy"], s=120, facecolors="none",
                           edgecolors=colour, label=f"chosen on validation, tolerance "
                                                    f"{100 * op['tolerance']:.1f} points")
        # the target: within 0.2 points of CNN1 at <= 0.6 of its multiply-adds / 0.7 of its time
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
                 f"({cv['labels']} labels)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    fig.savefig(Path(out) / "accuracy_compute_curve.png", dpi=90)
    plt.close(fig)
    return ["accuracy_compute_curve.png"]
