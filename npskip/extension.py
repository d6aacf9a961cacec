"""Beyond the paper, as resumable stages in a seed's run folder (after the paper's own).

    cnn3_any           CNN3 trained with a fresh random route per sample each epoch,
                       so that every route classifies well
    behaviour          CNN3-any's class probabilities on every route for the training,
                       validation and test images -> behaviour labels (npskip.routing)
    router_<L>_<R>     a router R ("small" or "full") trained on labels L ("behaviour"
                       or "activation", the paper's ranked images)
    curve_<L>_<R>      the threshold knob swept on the test set: accuracy, multiply-adds
                       (router included) and measured wall-clock against CNN1; random
                       routing in the same proportions at every point; the oracle; an
                       operating point chosen on the validation split, never on test

The router and curve stages carry the labelling and router in their names, so
runs with other choices sit side by side in one folder.
"""

import time

import numpy as np

from .model import SkipCNN
from .pipeline import accuracy_record, save_arrays
from .routing import (behaviour_labels, cheap_routed_predict, cheapest, downsample,
                      downsample_flops, pick_threshold, random_routes, route_probabilities,
                      threshold_routes)
from .losses import softmax
from .stats import confusion_matrix, majority_baseline
from .train import predict

THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95,
              0.97, 0.98, 0.99, 0.995, 0.999, 1.0)
RANDOM_DRAWS = 10      # random routings per curve point; their mean accuracy is reported
# The target the curve is judged against: accuracy within 0.2 points of CNN1's at no
# more than 0.6 of its multiply-adds (router included) and 0.7 of its wall-clock.
TARGET = {"accuracy_gap": 0.002, "flops_fraction": 0.6, "wall_fraction": 0.7}


def suffix(config):
    return f"{config.labels}_{config.router}"


def run_cnn3_any(run):
    def go():
        depth = len(run.config.widths)
        n = len(run.y_tr)
        # A fresh random route for every sample every epoch, seeded by (seed, 4, epoch)
        # (validation: one fixed draw, (seed, 4, 1000)):
        # reproducible and the same after a resume.
        routes = lambda epoch: random_routes(n, depth, [run.seed, 4, epoch])  # noqa: E731
        val_routes = random_routes(len(run.y_val), depth, [run.seed, 4, 1000])
        model, hist = run.train("cnn3_any", run.new_model(run.num_classes, 4), run.x_tr,
                                run.y_tr, routes=routes, val=(run.x_val, run.y_val, val_routes))
        full = model.flops()["total"]
        acc = [float(np.mean(predict(model, run.x_te, np.full(len(run.y_te), r)).argmax(axis=1)
                             == run.y_te)) for r in range(depth)]
        return {"route_test_accuracy": acc, "test_count": len(run.y_te),
                "route_flops_fraction": [model.flops(r)["total"] / full for r in range(depth)],
                "history": hist}
    return run.stage("cnn3_any", go)


def run_behaviour(run):
    def go():
        model = run.model("cnn3_any")
        conf = run.config.label_confidence
        out, summary = {}, {"confidence": conf}
        for name, x, y in (("train", run.x_tr, run.y_tr), ("val", run.x_val, run.y_val),
                           ("test", run.x_te, run.y_te)):
            probs = route_probabilities(model, x)                   # (depth, N, K)
            out[f"labels_{name}"] = behaviour_labels(probs, y, conf)
            out[f"right_{name}"] = probs.argmax(axis=2) == np.asarray(y)   # (depth, N)
            summary[f"{name}_label_counts"] = np.bincount(out[f"labels_{name}"],
                                                          minlength=model.depth).tolist()
            summary[f"{name}_right_on_route"] = out[f"right_{name}"].mean(axis=1).tolist()
        save_arrays(run.folder / "behaviour.npz", **out)
        return summary
    return run.stage("behaviour", go)


def behaviour(run):
    return np.load(run.folder / "behaviour.npz", allow_pickle=False)


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


def run_router(run):
    name = f"router_{suffix(run.config)}"

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
    return run.stage(name, go)


def run_curve(run):
    name = f"curve_{suffix(run.config)}"

    def go():
        cfg = run.config
        cnn1, cnn3 = run.model("cnn1"), run.model("cnn3_any")
        router = run.model(f"router_{suffix(cfg)}")
        b = behaviour(run)
        full = cnn1.flops()["total"]
        r_flops = router_flops(cfg, router, run.input_shape)
        p_val = softmax(predict(router, router_input(cfg, run.x_val)))
        p_te = softmax(predict(router, router_input(cfg, run.x_te)))
        rng = np.random.default_rng([run.seed, 6])
        n, n_val = len(run.y_te), len(run.y_val)
        curve = {k: [] for k in ("threshold", "test_accuracy", "flops_fraction", "val_accuracy",
                                 "val_flops_fraction", "random_test_accuracy", "route_counts")}
        for t in THRESHOLDS:
            r_te, r_val = threshold_routes(p_te, t), threshold_routes(p_val, t)
            right = b["right_test"][r_te, np.arange(n)]
            rand = [b["right_test"][rng.permutation(r_te), np.arange(n)].mean()
                    for _ in range(RANDOM_DRAWS)]
            curve["threshold"].append(t)
            curve["test_accuracy"].append(float(right.mean()))
            curve["flops_fraction"].append(float((cnn3.flops_per_image(r_te).mean() + r_flops)
                                                 / full))
            curve["val_accuracy"].append(float(b["right_val"][r_val, np.arange(n_val)].mean()))
            curve["val_flops_fraction"].append(float((cnn3.flops_per_image(r_val).mean()
                                                      + r_flops) / full))
            curve["random_test_accuracy"].append(float(np.mean(rand)))
            curve["route_counts"].append(np.bincount(r_te, minlength=cnn3.depth).tolist())
        curve["wall_fraction"], t_cnn1 = time_curve(cnn1, router, cnn3, run.x_te, cfg)

        # Operating points: the cheapest threshold whose validation accuracy is within a
        # tolerance of CNN1's; the test set only reports them. Two tolerances: the
        # config's (default 0.1 points, half the target's margin) and the target's own.
        cnn1_val = run.run_cnn1()["history"]["val_accuracy"][-1]
        points = {key: operating_point(curve, cnn1_val, tol, n) for key, tol in
                  (("operating_point", cfg.operating_tolerance),
                   ("operating_point_at_target_margin", TARGET["accuracy_gap"]))}
        oracle = cheapest(b["right_test"])
        return {
            "labels": cfg.labels, "router": cfg.router,
            "router_flops_fraction": r_flops / full, "curve": curve, **points,
            "oracle": {"test_accuracy": float(b["right_test"][oracle, np.arange(n)].mean()),
                       "flops_fraction": float(cnn3.flops_per_image(oracle).mean() / full)},
            "wall_seconds_cnn1": t_cnn1, "timed_images": n, "timing_repeats": cfg.timing_repeats,
        }
    return run.stage(name, go)


def operating_point(curve, cnn1_val, tolerance, n):
    """The curve's row at the threshold pick_threshold chooses on validation (the full
    route if none qualifies), with the rule's inputs and the test accuracy's interval."""
    found = pick_threshold(curve["val_accuracy"], curve["val_flops_fraction"], cnn1_val, tolerance)
    pick = len(curve["threshold"]) - 1 if found is None else found
    point = {k: v[pick] for k, v in curve.items()}
    point.update({"cnn1_val_accuracy": cnn1_val, "tolerance": tolerance,
                  "within_tolerance_on_val": found is not None, "test_count": n,
                  "ci95": accuracy_record(int(round(point["test_accuracy"] * n)), n)["ci95"]})
    return point


def time_curve(cnn1, router, cnn3, x, config):
    """Median wall-clock of the whole routed path at every threshold, over CNN1's median.

    Each repeat times CNN1 once and then every threshold, so a slow spell of a
    shared machine hits both. Returns (wall fractions per threshold, CNN1 seconds).
    """
    def routed(t):
        return cheap_routed_predict(router, cnn3, x, t, factor=pool_factor(config))
    predict(cnn1, x[:256])                       # compile and warm the buffers first
    routed(0.5)
    t_cnn1, t_routed = [], [[] for _ in THRESHOLDS]
    for _ in range(config.timing_repeats):
        start = time.perf_counter()
        predict(cnn1, x)
        t_cnn1.append(time.perf_counter() - start)
        for i, t in enumerate(THRESHOLDS):
            start = time.perf_counter()
            routed(t)
            t_routed[i].append(time.perf_counter() - start)
    base = float(np.median(t_cnn1))
    return [float(np.median(ts)) / base for ts in t_routed], t_cnn1


def run_all(run):
    """Every stage of the extension for one seed (the paper's stages must have run)."""
    if run.config.router == "none":
        return run.results
    for stage in (run_cnn3_any, run_behaviour, run_router, run_curve):
        stage(run)
    return run.results
