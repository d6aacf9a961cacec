"""Checks for the exercises of notebook 7 (beyond the paper: CNN1 with early exits).

Each check prints a line starting "passed", or raises AssertionError saying what
is wrong; a function that still raises NotImplementedError is reported as not
written yet. Reference solutions: ../solutions/nb07.py.
"""

from statistics import NormalDist

import numpy as np

from npskip.exits.heads import ExitCNN, exits_taken
from npskip.engine.losses import softmax
from npskip.engine.model import SkipCNN
from npskip.paper.stats import paired_difference, paired_loss_upper


def _not_written(name):
    print(f"{name}: not written yet (raise NotImplementedError is still there); "
          f"a reference solution is in solutions/nb07.py")


def _exit_logits(depth, n, k, seed, scale, dtype=np.float64):
    return np.random.default_rng(seed).normal(scale=scale, size=(depth, n, k)).astype(dtype)


def check_exits_taken(fn):
    """fn(exit_logits (depth, N, K), t) -> (N,) the exit each image takes, counted from 1:
    the first exit whose top softmax probability reaches t, else depth (CNN1's own dense
    layer); t >= 1: every image takes exit depth."""
    cases = [(_exit_logits(3, 60, 10, 0, 4.0), t) for t in (0.0, 0.5, 0.9, 0.99, 1.0)]
    cases += [(_exit_logits(4, 40, 3, 1, 3.0), t) for t in (0.6, 0.95)]
    # float32 logits this far apart give a top probability of exactly 1.0
    cases += [(_exit_logits(3, 30, 10, 2, 30.0, np.float32), t) for t in (0.999, 1.0)]
    # two equal logits: each probability is exactly 0.5
    cases += [(np.array([[[0.0, 0.0], [0.0, 3.0]], [[5.0, 0.0], [0.0, 0.0]],
                         [[0.0, 1.0], [1.0, 0.0]]]), t) for t in (0.5, 0.9)]
    for z, t in cases:
        try:
            got = fn(z.copy(), t)
        except NotImplementedError:
            return _not_written("exits_taken")
        want = exits_taken(z, t)
        got = np.asarray(got).ravel()
        assert got.shape == want.shape, (
            f"exits_taken(t={t}): expected one exit per image, shape {want.shape}, "
            f"received {got.shape}")
        bad = np.flatnonzero(got != want)
        if not len(bad):
            continue
        i = bad[0]
        top = softmax(z[:, i]).max(axis=1)               # (depth,) each exit's top probability
        hints = [
            (np.array_equal(got, want - 1), "exits are counted from 1, like the conv layers "
             "they read: exit k reads conv k, and the last exit, CNN1's dense layer, is depth"),
            (t >= 1, "t >= 1 means no early exit: every image runs CNN1, even where a head's "
             "probability rounds to exactly 1.0"),
            (np.any(top[:-1] == t), "'reaches' means >=: a probability equal to t is enough"),
            (t < 1 and got[i] > want[i] and top[want[i] - 1] >= t,
             "the first confident exit wins: the image never reaches the later ones"),
            (t < 1 and 1 <= got[i] < len(z) and top[got[i] - 1] < t
             and z[got[i] - 1, i].max() >= t,
             "the threshold is on the softmax probability, not on the logit")]
        raise AssertionError(
            f"exits_taken(t={t}): image {i}, top probability at exits 1..{len(z)}: "
            f"{np.round(top, 5).tolist()}; expected exit {want[i]}, received {got[i]}"
            + "".join(f" -- {words}" for cond, words in hints if cond))
    print("passed: exits_taken gives the first exit whose top probability reaches t, "
          "and CNN1's (the last) at t >= 1")


def check_exit_multiply_adds(fn):
    """fn(input_shape, widths, num_classes, hidden, pool, exit) -> multiply-adds per image
    of an image that leaves at ``exit`` (1..depth), as ExitCNN.multiply_adds counts them."""
    for shape, widths, classes, hidden, pool in (((28, 28, 1), (16, 16, 32), 10, 64, 2),
                                                 ((28, 28, 1), (16, 16, 32), 10, 0, 1),
                                                 ((32, 32, 3), (8, 16, 16, 32), 100, 20, 4)):
        model = ExitCNN(SkipCNN(shape, classes, widths), hidden, pool)
        depth = len(widths)
        for exit in range(1, depth + 1):
            try:
                got = fn(shape, widths, classes, hidden, pool, exit)
            except NotImplementedError:
                return _not_written("exit_multiply_adds")
            want = model.multiply_adds(exit)
            if int(got) == want:
                continue
            convs = [model.cnn1.multiply_adds()[f"conv{k}"] for k in range(1, depth + 1)]
            heads = [h.multiply_adds() for h in model.heads] + [model.cnn1.multiply_adds()["dense"]]
            passed = min(exit, depth - 1)                        # heads run on the way
            pooling = sum(int(np.prod(h.maps_shape)) for h in model.heads[:passed]) \
                if pool > 1 else 0
            hint = ""
            if exit < depth and int(got) == model.multiply_adds(exit + 1):
                hint = (" -- exits are counted from 1: exit k reads conv layer k, so an image "
                        "leaving at exit k ran conv layers 1..k")
            elif exit == depth and int(got) == model.cnn1.multiply_adds()["total"]:
                hint = (" -- with early exits on, an image that runs to the end has paid for "
                        "every head it passed on top of CNN1")
            elif int(got) == sum(convs[:exit]) + heads[exit - 1]:
                hint = (" -- an image that leaves at exit k has run every head before it too "
                        "(they were not sure enough, but they ran)")
            elif pool > 1 and int(got) == want - pooling:
                hint = (" -- averaging pool x pool blocks costs one addition per map value "
                        "(H*W*C per head): count it as a multiply-add")
            elif pool > 1 and int(got) > want:
                hint = (" -- a head's first dense layer reads the pooled maps: "
                        "(H/pool)*(W/pool)*C inputs, not H*W*C")
            elif hidden and int(got) == want - hidden * classes * passed:
                hint = " -- a head with a hidden layer has two dense layers: count both"
            raise AssertionError(
                f"exit_multiply_adds({shape}, {widths}, {classes}, hidden={hidden}, pool={pool}, "
                f"exit={exit}): expected {want:,} multiply-adds, received {int(got):,}{hint}")
    print("passed: exit_multiply_adds counts the conv layers, the pooling and every head an image "
          "passes")


def check_loss_upper_bound(fn):
    """fn(cascade_right (N,) bool, cnn1_right (N,) bool, confidence) -> the one-sided upper
    confidence bound of the accuracy loss against CNN1, as a fraction, by the normal
    approximation: -mean(d) + z * std(d, ddof=1) / sqrt(N), d = cascade - CNN1 per image.
    (The rule itself uses the exact bound: check_exact_loss_upper.)"""
    rng = np.random.default_rng(7)
    cases = []
    for n, p, flip, conf in ((6000, 0.988, 0.006, 0.95), (25, 0.8, 0.2, 0.95),
                             (1000, 0.95, 0.03, 0.99)):
        cnn1 = rng.random(n) < p
        cascade = cnn1 ^ (rng.random(n) < flip)          # disagree on about flip * n images
        cases.append((cascade, cnn1, conf))
    for cascade, cnn1, conf in cases:
        try:
            got = fn(cascade.copy(), cnn1.copy(), conf)
        except NotImplementedError:
            return _not_written("loss_upper_bound")
        want = -paired_difference(cascade, cnn1, conf)["low"]
        # relative: the answers differ from the reference only in rounding
        if abs(float(got) - want) <= 1e-7 * max(abs(want), 1e-6):
            continue
        n = len(cascade)
        d = cascade.astype(float) - cnn1.astype(float)
        a, b = cascade.mean(), cnn1.mean()
        z = NormalDist().inv_cdf(conf)
        unpaired_se = np.sqrt(a * (1 - a) / n + b * (1 - b) / n)

        def near(x):
            return abs(float(got) - x) <= 1e-6 * max(abs(x), 1e-6)
        hint = ""
        if near(b - a + z * unpaired_se):
            hint = (" -- that is the bound of two separate accuracies; pair them: the standard "
                    "error of the per-image differences d = cascade - CNN1")
        elif near(-d.mean() + z * d.std(ddof=0) / np.sqrt(n)):
            hint = (" -- np.std divides by N by default (ddof=0); the standard error of a mean "
                    "uses the sample standard deviation, d.std(ddof=1)")
        elif conf == 0.95 and near(-d.mean() + 1.959964 * d.std(ddof=1) / np.sqrt(n)):
            hint = (" -- a one-sided 95% bound uses z = 1.645 (normal_quantile(0.95)), not the "
                    "two-sided 1.96")
        elif near(d.mean() + z * d.std(ddof=1) / np.sqrt(n)):
            hint = " -- the loss is CNN1's lead: minus the mean of cascade - CNN1"
        raise AssertionError(
            f"loss_upper_bound on {n} images ({np.count_nonzero(cascade & ~cnn1)} right only "
            f"by the cascade, {np.count_nonzero(cnn1 & ~cascade)} right only by CNN1, confidence "
            f"{conf}): expected {100 * want:.8f} points, received {100 * float(got):.8f}{hint}")
    print("passed: loss_upper_bound, the paired bound by the normal approximation (the rule "
          "uses the exact one: part b)")


def check_exact_loss_upper(fn):
    """fn(a_only, b_only, n, confidence) -> the exact (Clopper-Pearson) one-sided upper
    bound of CNN1's lead, as a fraction, from a_only images only the cascade gets right
    and b_only only CNN1 gets right, among n (npskip.paper.stats.paired_loss_upper)."""
    from scipy.stats import beta
    cases = [(37, 19, 600, 0.95), (3, 0, 600, 0.95), (7, 5, 6000, 0.95), (0, 4, 1000, 0.95),
             (9, 9, 10000, 0.99), (0, 0, 600, 0.95), (20, 1, 6000, 0.95)]
    for a, b, n, conf in cases:
        try:
            got = fn(a, b, n, conf)
        except NotImplementedError:
            return _not_written("exact_loss_upper")
        want = paired_loss_upper(a, b, n, conf)
        if got is not None and np.isfinite(float(got)) and \
                abs(float(got) - want) <= 1e-7 * max(abs(want), 1e-6):
            continue
        d = a + b
        hint = ""
        if got is None or not np.isfinite(float(got)):
            hint = (" -- no disagreements: CNN1's lead is exactly 0" if d == 0 else
                    " -- when CNN1 wins every disagreement, Beta(b + 1, 0) is not defined: "
                    "the bound on p is 1" if b == d else "")
        elif d and b < d:
            def near(x):
                return abs(float(got) - x) <= 1e-6 * max(abs(x), 1e-6)
            p_u = beta.ppf(conf, b + 1, d - b)
            z = NormalDist().inv_cdf(conf)
            dd = np.r_[np.ones(a), -np.ones(b), np.zeros(n - d)]
            if near(p_u):
                hint = (" -- that is p_u, the bound on the share of disagreements CNN1 wins; "
                        "the lead is D (2 p_u - 1) / n")
            elif near(d * (2 * beta.ppf((1 + conf) / 2, b + 1, d - b) - 1) / n):
                hint = (" -- one-sided: the confidence quantile of Beta, not (1 + confidence) "
                        "/ 2")
            elif b and near(d * (2 * beta.ppf(conf, b, d - b + 1) - 1) / n):
                hint = (" -- Beta(b, D - b + 1) gives a lower bound's shape; the upper bound "
                        "on p is the quantile of Beta(b + 1, D - b)")
            elif near(-dd.mean() + z * dd.std(ddof=1) / np.sqrt(n)):
                hint = (" -- that is the normal approximation of part a; here use the "
                        "binomial count of CNN1's wins among the D disagreements")
        raise AssertionError(
            f"exact_loss_upper(a_only={a}, b_only={b}, n={n}, confidence={conf}): expected "
            f"{100 * want:.8f} points, received "
            f"{'None' if got is None else f'{100 * float(got):.8f}'}{hint}")
    print("passed: exact_loss_upper, the exact bound the rule accepts a threshold on")
