#!/usr/bin/env python3
"""Ways of training CNN3-any, compared at a reduced scale over seeds (accuracy, not speed).

    python benchmarks/cnn3_any_variants.py --dataset mnist --limit 20000 --epochs 5 \\
        --seeds 0 1 --out /tmp/cnn3-any-variants [--mirror URL] [--data-dir DIR]

For each seed: CNN1 is trained once on the first ``limit`` training images; then
CNN3-any is trained in each way below on the same images, with the same CNN1 as
teacher or starting point, and its behaviour labels and small router follow
(npskip.extension's own stages, in one folder per way). Validation (6,000 images)
and test (10,000) are the full splits, so the differences have a chance of showing.

Printed and written to ``<out>/summary.json``, per seed and way: CNN3-any's accuracy
on each route, and its full route against CNN1 image by image (the paired
difference, its standard error and the discordant counts), on validation and test.
Then the selection rule (npskip.selection) on validation, as the curve stage applies
it (its guard predicts the wall-clock from multiply-adds, so no timing is needed),
and what its choice does on the test set; with ``--curve`` the curve stage itself
runs instead, timing included (a busy machine's timings say little).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npskip import extension  # noqa: E402
from npskip.data import as_float32, load  # noqa: E402
from npskip.losses import softmax  # noqa: E402
from npskip.pipeline import Config, SeedRun  # noqa: E402
from npskip.routing import threshold_routes  # noqa: E402
from npskip.selection import choose_operating_point  # noqa: E402
from npskip.stats import paired_difference  # noqa: E402
from npskip.train import predict  # noqa: E402

WAYS = {
    "uniform": {},
    "distill": {"any_distill_weight": 0.7, "any_temperature": 4.0},
    "full_half": {"any_route_weights": (0.25, 0.25, 0.5)},
    "init_cnn1": {"any_init": "cnn1"},
    "init_cnn1_distill": {"any_init": "cnn1", "any_distill_weight": 0.7, "any_temperature": 4.0},
    "init_cnn1_full_half": {"any_init": "cnn1", "any_route_weights": (0.25, 0.25, 0.5)},
}


def seed_data(dataset, seed, limit, data_dir, mirror):
    ds = load(dataset, data_dir=data_dir, mirror=mirror)
    x_tr, y_tr, x_val, y_val = ds.validation_split(0.1, seed=seed)
    return (as_float32(x_tr[:limit]), y_tr[:limit], as_float32(x_val), y_val,
            as_float32(ds.x_test), ds.y_test, ds.input_shape, ds.num_classes)


def rule_without_timing(run, right1):
    """npskip.selection's rule on this run, without timing (its guard predicts the
    wall-clock; the measured column is filled with the multiply-adds and not used):
    what its accuracy evidence accepts on validation, and what the chosen point then
    does on the test set."""
    cfg, b = run.config, extension.behaviour(run)
    cnn3, router = run.model("cnn3_any"), run.model(f"router_{extension.suffix(cfg)}")
    full = run.model("cnn1").flops()["total"]
    r_flops = extension.router_flops(cfg, router, run.input_shape)
    out = {}
    for split, x, y in (("val", run.x_val, run.y_val), ("test", run.x_te, run.y_te)):
        p = softmax(predict(router, extension.router_input(cfg, x)))
        routes = [threshold_routes(p, t) for t in extension.THRESHOLDS]
        out[split] = (np.array([b[f"right_{split}"][r, np.arange(len(y))] for r in routes]),
                      np.array([(cnn3.flops_per_image(r).mean() + r_flops) / full
                                for r in routes]))
    (val_right, val_flops), (test_right, test_flops) = out["val"], out["test"]
    choice = choose_operating_point(extension.THRESHOLDS, val_right, right1["val"], val_flops,
                                    val_flops, cfg.operating_tolerance, cfg.operating_confidence)
    i = choice["index"]
    right = right1["test"] if i is None else test_right[i]
    return {"threshold": choice["threshold"], "decision": choice["decision"],
            "val_evidence": None if i is None else choice["evidence"][i]["paired_difference"],
            "test_minus_cnn1": paired_difference(right, right1["test"]),
            "flops_fraction": 1.0 if i is None else float(test_flops[i]),
            "accepted": [e["threshold"] for e in choice["evidence"] if e["accepted"]]}


def link(src, dst):
    if not dst.exists():
        os.link(src, dst)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--limit", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--ways", nargs="+", default=list(WAYS), choices=list(WAYS))
    p.add_argument("--out", default="/tmp/cnn3-any-variants")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--mirror", default=None)
    p.add_argument("--curve", action="store_true", help="also run the curve stage")
    p.add_argument("--summary", default="summary.json", help="file name in --out for the figures")
    args = p.parse_args(argv)
    out = Path(args.out)
    summary = {"settings": vars(args), "runs": {}}
    log = lambda m: print(m, flush=True)  # noqa: E731
    for seed in args.seeds:
        data = seed_data(args.dataset, seed, args.limit, args.data_dir, args.mirror)
        base = Config(dataset=args.dataset, epochs=args.epochs, seeds=[seed], timing_repeats=1)
        teacher = SeedRun(out / f"seed{seed}" / "cnn1", base, seed, data, progress=False, log=log)
        teacher.run_cnn1()
        cnn1 = teacher.model("cnn1")
        right1 = {"val": predict(cnn1, data[2]).argmax(axis=1) == data[3],
                  "test": predict(cnn1, data[4]).argmax(axis=1) == data[5]}
        for way in args.ways:
            cfg = Config(**{**base.__dict__, **WAYS[way]})
            folder = out / f"seed{seed}" / way
            folder.mkdir(parents=True, exist_ok=True)
            for name in ("cnn1.npz", "cnn1.json", "settings.json"):
                link(teacher.folder / name, folder / name)
            run = SeedRun(folder, cfg, seed, data, progress=False, log=log)
            start = time.perf_counter()
            any3 = extension.run_cnn3_any(run)
            extension.run_behaviour(run)
            extension.run_router(run)
            b = extension.behaviour(run)
            row = {"route_test_accuracy": any3["route_test_accuracy"],
                   "train_seconds": sum(any3["history"]["seconds"]),
                   "cnn1_test_accuracy": float(right1["test"].mean()),
                   "cnn1_val_accuracy": float(right1["val"].mean())}
            for split in ("val", "test"):
                right3 = b[f"right_{split}"]
                row[f"route_{split}_accuracy"] = right3.mean(axis=1).tolist()
                row[f"full_minus_cnn1_{split}"] = paired_difference(right3[-1], right1[split])
            if args.curve:
                cv = extension.run_curve(run)
                row["operating_point"] = cv["operating_point"]
            else:
                row["rule_without_timing"] = rule_without_timing(run, right1)
            summary["runs"][f"{seed}/{way}"] = row
            d = row["full_minus_cnn1_val"], row["full_minus_cnn1_test"]
            r = row.get("rule_without_timing")
            if r is not None:
                log(f"seed {seed} {way:>18s}: rule -> "
                    f"t = {r['threshold']}, test - CNN1 {100 * r['test_minus_cnn1']['mean']:+.2f} "
                    f"points at {r['flops_fraction']:.3f} of the multiply-adds; accepted t: "
                    f"{r['accepted']}")
            log(f"seed {seed} {way:>18s}: routes {' / '.join(f'{100 * a:.2f}' for a in row['route_test_accuracy'])}"
                f" (test); full - CNN1: val {100 * d[0]['mean']:+.2f} ± {100 * d[0]['se']:.2f}, "
                f"test {100 * d[1]['mean']:+.2f} ± {100 * d[1]['se']:.2f} points "
                f"({time.perf_counter() - start:.0f} s)")
            (out / args.summary).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
