"""Beyond the paper, as resumable stages in a seed's run folder (after the paper's own).

With ``router="exit"`` (the default):

    exits              exit heads on CNN1's conv layers, CNN1 frozen (npskip.exits)
    curve_exit         the threshold knob swept on the test set, as below; each image
                       leaves at the first head whose top probability reaches t

With a router ("small" or "full"):

    cnn3_any           CNN3 trained with a fresh random route per sample each epoch,
                       so that every route classifies well
    behaviour          CNN3-any's class probabilities on every route for the training,
                       validation and test images -> behaviour labels (npskip.routing)
    router_<L>_<R>     a router R ("small" or "full") trained on labels L ("behaviour"
                       or "activation", the paper's ranked images)
    curve_<L>_<R>      the threshold knob swept on the test set: accuracy, multiply-adds
                       (router included) and measured wall-clock against CNN1; random
                       routing in the same proportions at every point; the oracle; an
                       operating point chosen on the validation split alone, by the
                       rule of npskip.selection (paired evidence, wall-clock guard)

The router and curve stages carry the labelling and router in their names, so
runs with other choices sit side by side in one folder.
"""

import time

import numpy as np

from .exits import EXIT_THRESHOLDS, ExitCNN, exit_routes, train_heads
from .model import SkipCNN
from .pipeline import STAGE_SETTINGS, accuracy_record, save_arrays
from .routing import (behaviour_labels, cheap_routed_predict, cheapest, downsample,
                      downsample_flops, pick_threshold, random_routes, route_probabilities,
                      threshold_routes)
from .losses import distillation_loss, softmax
from .selection import WALL_LIMIT, choose_operating_point
from .stats import confusion_matrix, majority_baseline, paired_difference
from .train import predict

THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95,
              0.97, 0.98, 0.99, 0.995, 0.999, 1.0)
RANDOM_DRAWS = 10      # random routings per curve point; their mean accuracy is reported
# The target the curve is judged against: accuracy within 0.2 points of CNN1's at no
# more than 0.4 of its multiply-adds (router included) and 0.55 of its wall-clock.
TARGET = {"accuracy_gap": 0.002, "flops_fraction": 0.4, "wall_fraction": 0.55}


def suffix(config):
    """What the router and curve stages' names carry: "exit", or labels and router."""
    return "exit" if config.router == "exit" else f"{config.labels}_{config.router}"


def uses_cnn1(config):
    """Whether CNN3-any is built from CNN1 (its starting weights or its teacher)."""
    return config.any_init == "cnn1" or config.any_distill_weight != 0


def run_cnn3_any(run):
    if uses_cnn1(run.config):
        run.run_cnn1()

    def go():
        cfg = run.config
        depth = len(cfg.widths)
        n = len(run.y_tr)
        # A fresh random route for every sample every epoch, seeded by (seed, 4, epoch)
        # (validation: one fixed draw, (seed, 4, 1000)):
        # reproducible and the same after a resume.
        w = cfg.any_route_weights
        routes = lambda epoch: random_routes(n, depth, [run.seed, 4, epoch], w)  # noqa: E731
        val_routes = random_routes(len(run.y_val), depth, [run.seed, 4, 1000], w)
        # CNN1's weights as the starting point: its full route starts where CNN1 ended,
        # and the shorter routes learn to use the same dense layer.
        start = run.model("cnn1") if cfg.any_init == "cnn1" else run.new_model(run.num_classes, 4)
        model, hist = run.train("cnn3_any", start, run.x_tr, run.y_tr, routes=routes,
                                val=(run.x_val, run.y_val, val_routes), loss=distillation(run))
        full = model.flops()["total"]
        acc = [float(np.mean(predict(model, run.x_te, np.full(len(run.y_te), r)).argmax(axis=1)
                             == run.y_te)) for r in range(depth)]
        return {"route_test_accuracy": acc, "test_count": len(run.y_te),
                "route_flops_fraction": [model.flops(r)["total"] / full for r in range(depth)],
                "history": hist}
    return run.stage("cnn3_any", go, inputs=["cnn1.npz"] if uses_cnn1(run.config) else [],
                     outputs=["cnn3_any.npz"], settings=STAGE_SETTINGS["cnn3_any"])


def distillation(run):
    """The loss CNN3-any trains with: None (plain cross-entropy) unless the config asks
    for distillation from CNN1, whose logits on the training images are the teacher's."""
    cfg = run.config
    if cfg.any_distill_weight == 0:
        return None
    teacher = predict(run.model("cnn1"), run.x_tr)                  # (N, classes), once
    return lambda logits, idx: distillation_loss(logits, run.y_tr[idx], teacher[idx],
                                                 cfg.any_temperature, cfg.any_distill_weight)


def run_behaviour(run):
    run_cnn3_any(run)

    def go():
        model = run.model("cnn3_any")
        conf = run.config.label_confidence
        out, summary = {}, {"confidence": conf}
        for name, x, y in (("train", run.x_tr, run.y_tr), ("val", run.x_val, run.y_val),
                           ("test", run.x_te, run.y_te)):
            probs = route_probabilities(model, x)                   # (depth, N, K)
            out[f"labels_{name}"] = behaviour_labels(probs, y, conf)
            out[f"right_{name}"] = probs.argmax(axis=2) == np.asarray(y)   # (depth, N)
            # the true class's probability: a finer score than right-or-wrong
            out[f"p_true_{name}"] = probs[:, np.arange(len(y)), np.asarray(y)]   # (depth, N)
            summary[f"{name}_label_counts"] = np.bincount(out[f"labels_{name}"],
                                                          minlength=model.depth).tolist()
            summary[f"{name}_right_on_route"] = out[f"right_{name}"].mean(axis=1).tolist()
        save_arrays(run.folder / "behaviour.npz", **out)
        return summary
    return run.stage("behaviour", go, inputs=["cnn3_any.npz"], outputs=["behaviour.npz"])


def behaviour(run):
    return run.arrays("behaviour.npz")


def pool_factor(config):
    """The small router sees the image pooled 2x2; the full one sees it as is."""
    return 2 if config.router == "small" else 1


def router_input(config, x):
    """What the router sees (see pool_factor)."""
    return downsample(x, pool_factor(config))


def new_router(run):
    depth, f = len(run.config.widths), pool_factor(run.config)
    if f > 1:
        h, w, c = run.input_shape
        return SkipCNN((h // f, w // f, c), depth, run.config.router_widths, seed=[run.seed, 5])
    return SkipCNN(run.input_shape, depth, run.config.widths, seed=[run.seed, 5])


def router_flops(config, router, input_shape):
    """The router's multiply-adds per image, pooling included."""
    return router.flops()["total"] + downsample_flops(input_shape, pool_factor(config))


def router_inputs(run):
    """Run the stage the router learns from; return its file."""
    if run.config.labels == "behaviour":
        run_behaviour(run)
        return "behaviour.npz"
    run.run_ranking()
    return "ranking.npz"


def run_router(run):
    name = f"router_{suffix(run.config)}"
    source = router_inputs(run)

    def go():
        cfg = run.config
        if cfg.labels == "behaviour":
            b = behaviour(run)
            x_tr, r_tr = run.x_tr, b["labels_train"]
            x_val, r_val = run.x_val, b["labels_val"]
            x_te, r_te = run.x_te, b["labels_test"]
        else:                                   # the paper's ranked images and their split
            x, _, routes, (tr, val, te) = run.labelled()
            x_tr, r_tr, x_val, r_val, x_te, r_te = x[tr], routes[tr], x[val], routes[val], \
                x[te], routes[te]
        model, hist = run.train(name, new_router(run), router_input(cfg, x_tr), r_tr,
                                val=(router_input(cfg, x_val), r_val))
        pred = predict(model, router_input(cfg, x_te)).argmax(axis=1)
        depth = len(cfg.widths)
        return {**accuracy_record(int(np.count_nonzero(pred == r_te)), len(r_te)),
                "labels": cfg.labels, "router": cfg.router, "train_count": len(r_tr),
                "majority_baseline": majority_baseline(r_tr, r_te),
                "confusion_matrix": confusion_matrix(r_te, pred, depth).tolist(),
                "flops_per_image": router_flops(cfg, model, run.input_shape), "history": hist}
    return run.stage(name, go, inputs=[source], outputs=[f"{name}.npz"])


def run_curve(run):
    name = f"curve_{suffix(run.config)}"
    run.run_cnn1()
    run_behaviour(run)
    run_router(run)

    def go():
        cfg = run.config
        cnn1, cnn3 = run.model("cnn1"), run.model("cnn3_any")
        router = run.model(f"router_{suffix(cfg)}")
        b = behaviour(run)
        full = cnn1.flops()["total"]
        r_flops = router_flops(cfg, router, run.input_shape)
        p_val = softmax(predict(router, router_input(cfg, run.x_val)))
        p_te = softmax(predict(router, router_input(cfg, run.x_te)))
        cnn1_val = predict(cnn1, run.x_val)                      # (N, classes) logits
        record = sweep(
            run, THRESHOLDS, lambda t: threshold_routes(p_val, t),
            lambda t: threshold_routes(p_te, t), b["right_val"], b["right_test"],
            lambda routes, t: (cnn3.flops_per_image(routes) + r_flops) / full,
            lambda x, t: cheap_routed_predict(router, cnn3, x, t, factor=pool_factor(cfg)), cnn1,
            cnn1_val.argmax(axis=1) == run.y_val,
            predict(cnn1, run.x_te).argmax(axis=1) == run.y_te)
        # The same choice with the true class's probability as the per-image score: a
        # finer view of the chosen point's validation evidence (reported, not decided on).
        choice = record["selection"]["threshold"]
        if "p_true_val" in b and choice is not None:
            n_val = len(run.y_val)
            r_val = threshold_routes(p_val, choice)
            p1 = softmax(cnn1_val)[np.arange(n_val), run.y_val]
            record["operating_point"]["val_p_true_difference"] = paired_difference(
                b["p_true_val"][r_val, np.arange(n_val)], p1, cfg.operating_confidence)
        return {"labels": cfg.labels, "router": cfg.router, "router_flops_fraction": r_flops / full,
                **record, "oracle": oracle_record(b["right_test"], cnn3.flops_per_image, full)}
    return run.stage(name, go, inputs=["cnn1.npz", "cnn3_any.npz", "behaviour.npz",
                                       f"router_{suffix(run.config)}.npz"],
                     settings=STAGE_SETTINGS["curve"])


def sweep(run, thresholds, routes_val, routes_test, right_val, right_test, flops_fraction,
          routed, cnn1, cnn1_val_right, cnn1_test_right):
    """The curve of a routing knob, its wall-clock, and the operating point chosen on
    validation (shared by the router and the exit curves).

    routes_val(t), routes_test(t): each image's route at threshold t; right_val,
    right_test: (depth, N) bool, the routed network right on image i by route r;
    flops_fraction(routes, t) -> (N,) multiply-adds per image against CNN1's, routing
    included; routed(x, t): the deployed path on images x (timed against CNN1);
    cnn1_val_right, cnn1_test_right: (N,) bool, CNN1 right on each image.
    """
    cfg = run.config
    rng = np.random.default_rng([run.seed, 6])
    n, n_val = right_test.shape[1], right_val.shape[1]
    curve = {k: [] for k in ("threshold", "test_accuracy", "flops_fraction", "val_accuracy",
                             "val_flops_fraction", "random_test_accuracy", "route_counts")}
    val_right, test_right = [], []          # (T, N): the routed network right or not
    for t in thresholds:
        r_te, r_val = routes_test(t), routes_val(t)
        right = right_test[r_te, np.arange(n)]
        rand = [right_test[rng.permutation(r_te), np.arange(n)].mean()
                for _ in range(RANDOM_DRAWS)]
        val_right.append(right_val[r_val, np.arange(n_val)])
        test_right.append(right)
        curve["threshold"].append(float(t))
        curve["test_accuracy"].append(float(right.mean()))
        curve["flops_fraction"].append(float(flops_fraction(r_te, t).mean()))
        curve["val_accuracy"].append(float(val_right[-1].mean()))
        curve["val_flops_fraction"].append(float(flops_fraction(r_val, t).mean()))
        curve["random_test_accuracy"].append(float(np.mean(rand)))
        curve["route_counts"].append(np.bincount(r_te, minlength=len(right_test)).tolist())
    curve["wall_fraction"], t_cnn1 = time_curve(cnn1, routed, thresholds, run.x_te, cfg)
    # The guard's wall-clock is measured on the validation images, like the evidence.
    curve["val_wall_fraction"], t_cnn1_val = time_curve(cnn1, routed, thresholds, run.x_val, cfg)

    # The rule sees validation arrays only (npskip.selection); the test set then
    # reports what its choice does.
    choice = choose_operating_point(thresholds, np.array(val_right), cnn1_val_right,
                                    curve["val_flops_fraction"], curve["val_wall_fraction"],
                                    cfg.operating_tolerance, cfg.operating_confidence,
                                    judged_on=n)          # the test set's size, not its images
    point = operating_point(curve, choice, np.array(test_right), cnn1_test_right)
    # the rule this replaces, for comparison: cheapest t whose validation accuracy
    # (not paired) is within 0.1 points of CNN1's, no guard
    cnn1_val = float(cnn1_val_right.mean())
    found = pick_threshold(curve["val_accuracy"], curve["val_flops_fraction"], cnn1_val, 0.001)
    previous = len(thresholds) - 1 if found is None else found
    return {
        "curve": curve, "operating_point": point,
        "selection": {"decision": choice["decision"], "threshold": choice["threshold"],
                      "tolerance": cfg.operating_tolerance,
                      "confidence": cfg.operating_confidence, "wall_limit": WALL_LIMIT,
                      "evidence": evidence_columns(choice["evidence"])},
        "previous_rule_point": {**{k: v[previous] for k, v in curve.items()},
                                "cnn1_val_accuracy": cnn1_val, "tolerance": 0.001,
                                "within_tolerance_on_val": found is not None},
        "wall_seconds_cnn1": t_cnn1, "wall_seconds_cnn1_val": t_cnn1_val,
        "timed_images": n, "timed_val_images": n_val, "timing_repeats": cfg.timing_repeats,
    }


def oracle_record(right_test, flops_per_image, full):
    """Every test image on the cheapest route that gets it right (the last if none does):
    its accuracy and multiply-adds against CNN1's. right_test: (depth, N) bool."""
    oracle = cheapest(right_test)
    return {"test_accuracy": float(right_test[oracle, np.arange(len(oracle))].mean()),
            "flops_fraction": float(flops_per_image(oracle).mean() / full)}


def evidence_columns(evidence):
    """choose_operating_point's per-threshold records as one list per field (so that
    results.json can average them over seeds like the curve's own lists)."""
    cols = {k: [e[k] for e in evidence] for k in ("threshold", "accepted", "cheaper",
                                                  "modelled_wall_fraction")}
    for k in ("mean", "se", "loss_upper", "a_only", "b_only"):
        cols["routed_minus_cnn1_" + k if k in ("mean", "se") else k] = \
            [e["paired_difference"][k] for e in evidence]
    cols["test_noise"] = [e["test_noise"] for e in evidence]
    cols["n"] = evidence[0]["paired_difference"]["n"]
    return cols


def operating_point(curve, choice, test_right, cnn1_test_right):
    """What the rule's choice does on the test set, beside its validation evidence.

    curve: the curve's lists (one value per threshold); choice: from
    choose_operating_point; test_right: (T, N) the routed network right on test image
    i at threshold t; cnn1_test_right: (N,). CNN1 (the fallback) is the point at 1.0
    of its own multiply-adds and wall-clock, with no router.
    """
    n = len(cnn1_test_right)
    i = choice["index"]
    if i is None:
        right = cnn1_test_right
        point = {"choice": "cnn1", "threshold": None, "flops_fraction": 1.0,
                 "wall_fraction": 1.0, "val_flops_fraction": 1.0, "val_wall_fraction": 1.0,
                 "route_counts": None, "random_test_accuracy": None, "val_evidence": None}
    else:
        right = test_right[i]
        point = {"choice": "routed", **{k: v[i] for k, v in curve.items()},
                 "val_evidence": {**choice["evidence"][i]["paired_difference"],
                                  "test_noise": choice["evidence"][i]["test_noise"]}}
    cnn1_acc = float(cnn1_test_right.mean())
    acc = float(right.mean())
    point.update({
        "decision": choice["decision"], "test_accuracy": acc, "test_count": n,
        "ci95": accuracy_record(int(np.count_nonzero(right)), n)["ci95"],
        "cnn1_test_accuracy": cnn1_acc,
        "test_paired_difference": paired_difference(right, cnn1_test_right),
        "meets_target": meets_target(cnn1_acc, acc, point["flops_fraction"],
                                     point["wall_fraction"])})
    return point


def meets_target(cnn1_acc, acc, flops, wall):
    """Within TARGET's accuracy gap of CNN1 at no more than its fractions of the compute."""
    return bool(acc >= cnn1_acc - TARGET["accuracy_gap"] - 1e-12
                and flops <= TARGET["flops_fraction"] and wall <= TARGET["wall_fraction"])


def time_curve(cnn1, routed, thresholds, x, config):
    """Median wall-clock of the whole routed path at every threshold, over CNN1's median.

    routed(x, t) runs the deployed path (routing included). Each repeat times CNN1
    once and then every threshold, so a slow spell of a shared machine hits both.
    Returns (wall fractions per threshold, CNN1 seconds).
    """
    predict(cnn1, x[:256])                       # compile and warm the buffers first
    routed(x[:256], 0.5)
    t_cnn1, t_routed = [], [[] for _ in thresholds]
    for _ in range(config.timing_repeats):
        start = time.perf_counter()
        predict(cnn1, x)
        t_cnn1.append(time.perf_counter() - start)
        for i, t in enumerate(thresholds):
            start = time.perf_counter()
            routed(x, t)
            t_routed[i].append(time.perf_counter() - start)
    base = float(np.median(t_cnn1))
    return [float(np.median(ts)) / base for ts in t_routed], t_cnn1


# --------------------------------------------------------------------------
# CNN1 with early exits (npskip.exits): the default way of routing
# --------------------------------------------------------------------------

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
        save_arrays(run.folder / "exits.npz", **model.arrays())
        z = model.route_logits(run.x_te)
        full = model.cnn1.flops()["total"]
        return {"route_test_accuracy": [float(np.mean(z[k].argmax(axis=1) == run.y_te))
                                        for k in range(model.depth)],
                "test_count": len(run.y_te),
                "route_flops_fraction": [model.flops(r) / full for r in range(model.depth)],
                "history": hist}
    return run.stage("exits", go, inputs=["cnn1.npz"], outputs=["exits.npz"],
                     settings=STAGE_SETTINGS["exits"])


def run_exit_curve(run):
    run_exits(run)

    def go():
        cfg = run.config
        model = exit_model(run)
        cnn1 = model.cnn1
        full = cnn1.flops()["total"]
        z_val, z_te = model.route_logits(run.x_val), model.route_logits(run.x_te)
        right_val = z_val.argmax(axis=2) == run.y_val            # (depth, N)
        right_te = z_te.argmax(axis=2) == run.y_te
        record = sweep(run, EXIT_THRESHOLDS, lambda t: exit_routes(z_val, t),
                       lambda t: exit_routes(z_te, t), right_val, right_te,
                       lambda routes, t: model.flops_per_image(routes, t) / full,
                       lambda x, t: model.predict(x, t), cnn1,
                       right_val[-1], right_te[-1])        # the last exit is CNN1 itself
        # The oracle leaves at the first exit that is right; it pays every head on the way.
        return {"labels": "confidence", "router": "exit", "router_flops_fraction": 0.0,
                **record, "oracle": oracle_record(right_te, model.flops_per_image, full)}
    return run.stage("curve_exit", go, inputs=["cnn1.npz", "exits.npz"],
                     settings=STAGE_SETTINGS["curve"])


def run_all(run):
    """Every stage of the extension for one seed (the paper's stages must have run)."""
    if run.config.router == "none":
        return run.results
    stages = ((run_exits, run_exit_curve) if run.config.router == "exit" else
              (run_cnn3_any, run_behaviour, run_router, run_curve))
    for stage in stages:
        stage(run)
    return run.results
