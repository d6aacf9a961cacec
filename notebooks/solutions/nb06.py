"""Reference solution for the exercise of notebook 6. Try it yourself first."""

import numpy as np


def cost_with_router(route_counts, model, router):
    """Mean multiply-adds per image of router + model on its routes, over the model's full route.

    Every image pays for the router once, then for the conv layers and dense rows of its route.
    """
    per_route = np.array([model.flops(r)["total"] for r in range(model.depth)])
    mean = np.dot(route_counts, per_route) / np.sum(route_counts)
    return (mean + router.flops()["total"]) / model.flops()["total"]
