#!/usr/bin/env python3
"""The largest gradient-check errors over many random layer shapes (accuracy, not speed).

    python benchmarks/gradient_errors.py [--trials 150] [--seed 2026]

The test suite asserts every relative error is below 1e-7; this prints how far
below the worst case actually is, per layer, in float64 with h = 1e-5.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npskip.engine.gradcheck import check_layer, check_loss  # noqa: E402
from npskip.engine.layers import Conv2D, Dense, ReLU  # noqa: E402
from npskip.engine.losses import softmax_cross_entropy  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    worst = {"Conv2D": 0.0, "Dense": 0.0, "ReLU": 0.0, "softmax cross-entropy": 0.0}
    for t in range(args.trials):
        n, h, w = (int(v) for v in rng.integers(1, [5, 9, 9]))
        c_in, c_out = (int(v) for v in rng.integers(1, 9, 2))
        k, s = int(rng.choice([1, 3, 5])), int(rng.choice([1, 2]))
        padding = "valid" if (rng.random() < 0.5 and h >= k and w >= k) else "same"
        conv = Conv2D(c_in, c_out, k, stride=s, padding=padding, rng=rng, dtype=np.float64)
        conv.params["b"][:] = rng.standard_normal(c_out)
        worst["Conv2D"] = max(worst["Conv2D"], *check_layer(
            conv, rng.standard_normal((n, h, w, c_in)), seed=t).values())
        dense = Dense(c_in, c_out, rng=rng, dtype=np.float64)
        worst["Dense"] = max(worst["Dense"], *check_layer(
            dense, rng.standard_normal((n, c_in)), seed=t).values())
        x = rng.standard_normal((n, h, w, c_in))
        x += np.sign(x) * 0.1                       # away from ReLU's kink
        worst["ReLU"] = max(worst["ReLU"], check_layer(ReLU(), x, seed=t)["x"])
        logits = rng.standard_normal((n, c_out + 1)) * rng.choice([0.1, 1.0, 3.0])
        worst["softmax cross-entropy"] = max(worst["softmax cross-entropy"], check_loss(
            softmax_cross_entropy, logits, rng.integers(0, c_out + 1, n)))
    print(f"largest relative gradient error over {args.trials} random shapes (seed {args.seed}):")
    for name, err in worst.items():
        print(f"  {name:24s} {err:.1e}")


if __name__ == "__main__":
    main()
