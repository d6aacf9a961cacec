"""Beyond the paper, as two resumable stages in a seed's run folder (after the paper's own).

    exits        an exit head after every conv layer but the last, trained on the
                 frozen CNN1 (npskip.exits.heads)
    exit_curve   the threshold t swept over the test set: accuracy, multiply-adds and
                 wall-clock against CNN1, random exits in the same mix, the oracle;
                 and the operating point chosen on the validation split alone
                 (npskip.exits.selection), with what it does on the test set
"""

import time

import numpy as np

from npskip.engine.train import predict
from npskip.exits.heads import EXIT_THRESHOLDS, ExitCNN, exits_taken, train_heads
from npskip.exits.selection import Rule, choose_operating_point
from npskip.harness.config import STAGE_SETTINGS
from npskip.paper.stats import accuracy_record, paired_difference

RANDOM_DRAWS = 10      # random exit mixes per curve point; their mean accuracy is reported
# The target the curve is judged against: accuracy within 0.2 points of CNN1's at no
# more than 0.4 of its multiply-adds and 0.55 of its wall-clock.
TARGET = {"accuracy_gap": 0.002, "multiply_add_fraction": 0.4, "wall_fraction": 0.55}


def exit_model(run):
    """CNN1 with the exit heads of the exits stage."""
    cfg = run.config
    return ExitCNN(run.model("cnn1"), cfg.exit_hidden, cfg.exit_pool).load_arrays(
        run.arrays("exits.npz"), str(run.folder / "exits.npz"))


def run_exits(run):
    run.run_cnn1()

    def go():
        cfg = run.config
        model = ExitCNN(run.model("cnn1"), cfg.exit_hidden, cfg.exit_pool, seed=[run.seed, 7])
        hist = train_heads(model, run.x_tr, run.y_tr, cfg.exit_epochs, cfg.batch_size,
                           seed=[run.seed, 7], val=(run.x_val, run.y_val),
                           log=lambda m: run.log(f"[seed {run.seed}] {m}"))
        run.save_arrays("exits.npz", **model.arrays())
        z = model.exit_logits(run.x_te)
        full = model.cnn1.multiply_adds()["total"]
        return {"exit_test_accuracy": [float(np.mean(z[k].argmax(axis=1) == run.y_te))
                                       for k in range(model.depth)],
                "test_count": len(run.y_te),
                "exit_multiply_add_fraction": [model.multiply_adds(k) / full
                                               for k in range(1, model.depth + 1)],
                "history": hist}
    return run.stage("exits", go, inputs=["cnn1.npz"], outputs=["exits.npz"],
                     settings=STAGE_SETTINGS["exits"])


def run_exit_curve(run):
    run_exits(run)

    def go():
        model = exit_model(run)
        z_val, z_te = model.exit_logits(run.x_val), model.exit_logits(run.x_te)
        val_right = z_val.argmax(axis=2) == run.y_val          # (depth, N): exit k-1 right
        test_right = z_te.argmax(axis=2) == run.y_te
        curve, val_exited, test_exited = sweep(model, (z_val, val_right), (z_te, test_right),
                                               np.random.default_rng([run.seed, 6]))
        reps = run.config.timing_repeats
        curve["wall_fraction"], t_cnn1 = time_curve(model, run.x_te, reps)
        # the rule's wall-clock check is measured on the validation images, like its evidence
        curve["val_wall_fraction"], t_cnn1_val = time_curve(model, run.x_val, reps)
        rule = Rule(run.config.operating_tolerance, run.config.operating_confidence,
                    judged_on=len(run.y_te))                # the test set's size, not its images
        cost = {"multiply_add_fraction": curve["val_multiply_add_fraction"],
                "wall_fraction": curve["val_wall_fraction"]}
        # the last exit is CNN1 itself, so its row is CNN1's right-or-wrong
        choice = choose_operating_point(EXIT_THRESHOLDS, val_exited, val_right[-1], cost, rule)
        full = model.cnn1.multiply_adds()["total"]
        return {"curve": curve,
                "operating_point": operating_point(curve, choice, test_exited, test_right[-1]),
                "selection": {"decision": choice["decision"], "threshold": choice["threshold"],
                              "tolerance": rule.tolerance, "confidence": rule.confidence,
                              "cost_limit": rule.cost_limit,
                              "evidence": evidence_columns(choice["evidence"])},
                "oracle": oracle_record(test_right, model.multiply_adds_per_image, full),
                "wall_seconds_cnn1": t_cnn1, "wall_seconds_cnn1_val": t_cnn1_val,
                "timed_images": len(run.y_te), "timed_val_images": len(run.y_val),
                "timing_repeats": reps}
    return run.stage("exit_curve", go, inputs=["cnn1.npz", "exits.npz"],
                     settings=STAGE_SETTINGS["exit_curve"])


def sweep(model, val, test, rng):
    """The curve over EXIT_THRESHOLDS, counted from every exit's logits.

    val, test: (logits (depth, N, classes), right (depth, N) bool); rng draws the
    random exit mixes. Returns (curve: one list per column, val_exited (T, N),
    test_exited (T, N)): whether the cascade is right on each image at each t.
    """
    (z_val, right_val), (z_te, right_te) = val, test
    n, n_val = right_te.shape[1], right_val.shape[1]
    full = model.cnn1.multiply_adds()["total"]
    curve = {k: [] for k in ("threshold", "test_accuracy", "multiply_add_fraction",
                             "val_accuracy", "val_multiply_add_fraction",
                             "random_test_accuracy", "exit_counts")}
    val_exited, test_exited = [], []
    for t in EXIT_THRESHOLDS:
        e_te, e_val = exits_taken(z_te, t) - 1, exits_taken(z_val, t) - 1   # rows of the arrays
        right = right_te[e_te, np.arange(n)]
        rand = [right_te[rng.permutation(e_te), np.arange(n)].mean() for _ in range(RANDOM_DRAWS)]
        val_exited.append(right_val[e_val, np.arange(n_val)])
        test_exited.append(right)
        curve["threshold"].append(float(t))
        curve["test_accuracy"].append(float(right.mean()))
        curve["multiply_add_fraction"].append(
            float((model.multiply_adds_per_image(e_te + 1, t) / full).mean()))
        curve["val_accuracy"].append(float(val_exited[-1].mean()))
        curve["val_multiply_add_fraction"].append(
            float((model.multiply_adds_per_image(e_val + 1, t) / full).mean()))
        curve["random_test_accuracy"].append(float(np.mean(rand)))
        curve["exit_counts"].append(np.bincount(e_te, minlength=len(right_te)).tolist())
    return curve, np.array(val_exited), np.array(test_exited)


def oracle_record(right_test, multiply_adds_per_image, full):
    """Every test image leaving at the first exit that is right (the last if none is):
    its accuracy and multiply-adds against CNN1's. right_test: (depth, N) bool."""
    first = np.where(right_test.any(axis=0), right_test.argmax(axis=0), len(right_test) - 1)
    return {"test_accuracy": float(right_test[first, np.arange(len(first))].mean()),
            "multiply_add_fraction": float(multiply_adds_per_image(first + 1).mean() / full)}


def evidence_columns(evidence):
    """choose_operating_point's per-threshold records as one list per field (so that
    results.json can average them over seeds like the curve's own lists)."""
    cols = {k: [e[k] for e in evidence] for k in ("threshold", "accepted", "cheaper")}
    for k in ("mean", "se", "loss_upper", "a_only", "b_only"):
        cols["exited_minus_cnn1_" + k if k in ("mean", "se") else k] = \
            [e["paired_difference"][k] for e in evidence]
    cols["test_noise"] = [e["test_noise"] for e in evidence]
    cols["n"] = evidence[0]["paired_difference"]["n"]
    return cols


def operating_point(curve, choice, test_exited, cnn1_test_right):
    """What the rule's choice does on the test set, beside its validation evidence.

    test_exited: (T, N) the cascade right on test image i at threshold t;
    cnn1_test_right: (N,). The fallback, CNN1, is the point at 1.0 of its own costs.
    """
    n, i = len(cnn1_test_right), choice["index"]
    if i is None:
        right = cnn1_test_right
        point = {"choice": "cnn1", "threshold": None, "multiply_add_fraction": 1.0,
                 "wall_fraction": 1.0, "val_multiply_add_fraction": 1.0,
                 "val_wall_fraction": 1.0, "exit_counts": None, "random_test_accuracy": None,
                 "val_evidence": None}
    else:
        right = test_exited[i]
        point = {"choice": "exits", **{k: v[i] for k, v in curve.items()},
                 "val_evidence": {**choice["evidence"][i]["paired_difference"],
                                  "test_noise": choice["evidence"][i]["test_noise"]}}
    cnn1_acc, acc = float(cnn1_test_right.mean()), float(right.mean())
    point.update({
        "decision": choice["decision"], "test_accuracy": acc, "test_count": n,
        "ci95": accuracy_record(int(np.count_nonzero(right)), n)["ci95"],
        "cnn1_test_accuracy": cnn1_acc,
        "test_paired_difference": paired_difference(right, cnn1_test_right),
        "meets_target": meets_target(cnn1_acc, acc, point["multiply_add_fraction"],
                                     point["wall_fraction"])})
    return point


def meets_target(cnn1_acc, acc, madds, wall):
    """Within TARGET's accuracy gap of CNN1 at no more than its fractions of the compute."""
    return bool(acc >= cnn1_acc - TARGET["accuracy_gap"] - 1e-12
                and madds <= TARGET["multiply_add_fraction"] and wall <= TARGET["wall_fraction"])


def time_curve(model, x, repeats):
    """Median wall-clock of the cascade at every threshold over CNN1's median, on x.

    Each repeat times CNN1 once and then every threshold, so a slow spell of a
    shared machine hits both. Returns (fractions per threshold, CNN1's seconds).
    """
    predict(model.cnn1, x[:256])                 # compile and warm the buffers first
    model.predict(x[:256], 0.5)
    t_cnn1, t_exits = [], [[] for _ in EXIT_THRESHOLDS]
    for _ in range(repeats):
        start = time.perf_counter()
        predict(model.cnn1, x)
        t_cnn1.append(time.perf_counter() - start)
        for i, t in enumerate(EXIT_THRESHOLDS):
            start = time.perf_counter()
            model.predict(x, t)
            t_exits[i].append(time.perf_counter() - start)
    base = float(np.median(t_cnn1))
    return [float(np.median(ts)) / base for ts in t_exits], t_cnn1


def run_all(run):
    """Both stages for one seed (after the paper's), unless the config turns them off."""
    if run.config.exits:
        run_exits(run)
        run_exit_curve(run)
    return run.results
