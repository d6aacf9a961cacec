"""Reference solutions for the exercises of notebook 6. Try them yourself first."""

import numpy as np
from scipy import stats


def cost_with_router(route_counts, model, router):
    """Mean multiply-adds per image of router + model on its routes, over the model's full route.

    Every image pays for the router once, then for the conv layers and dense rows of its route.
    """
    per_route = np.array([model.multiply_adds(r)["total"] for r in range(model.depth)])
    mean = np.dot(route_counts, per_route) / np.sum(route_counts)
    return (mean + router.multiply_adds()["total"]) / model.multiply_adds()["total"]


def cifar_record(record):
    """One 3074-byte CIFAR-100 record -> (image (32, 32, 3) uint8, coarse label, fine label).

    Byte 0 is the coarse label (0..19), byte 1 the fine label (0..99); then 1024 red,
    1024 green and 1024 blue bytes, each plane a 32x32 image row by row. npskip keeps
    images height x width x channels, so the channel axis moves last.
    """
    record = np.asarray(record, dtype=np.uint8)
    image = record[2:].reshape(3, 32, 32).transpose(1, 2, 0)
    return image, int(record[0]), int(record[1])


def seed_gap(a, b):
    """Mean of a - b over seeds (the same seeds for both) and its 95% interval, (mean, low, high).

    The seeds pair the two networks (same split, same test set), so the differences are
    taken seed by seed. With n seeds the standard error comes from n - 1 degrees of
    freedom, and the interval needs Student's t quantile (4.30 for three seeds), not 1.96.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    se = d.std(ddof=1) / np.sqrt(n)
    half = stats.t.ppf(0.975, n - 1) * se
    return d.mean(), d.mean() - half, d.mean() + half
