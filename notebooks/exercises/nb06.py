"""Check for the exercise of notebook 6 (other data sets).

The check prints a line starting "passed", or raises AssertionError saying what is
wrong; a function that still raises NotImplementedError is reported as not written
yet. Reference solution: ../solutions/nb06.py.
"""

import numpy as np

from npskip.model import SkipCNN


def _not_written(name):
    print(f"{name}: not written yet (raise NotImplementedError is still there); "
          f"a reference solution is in solutions/nb06.py")


def check_cost_with_router(fn):
    """fn(route_counts, model, router) -> mean multiply-adds per image of router + routed model,
    as a fraction of the model's full route."""
    model = SkipCNN((28, 28, 1), 10, (16, 16, 32))
    for counts, router in (([804, 587, 8609], SkipCNN((28, 28, 1), 3, (16, 16, 32))),
                           ([10000, 0, 0], SkipCNN((14, 14, 1), 3, (8, 16))),
                           ([1, 2, 3], SkipCNN((28, 28, 1), 3, (4, 4, 4)))):
        try:
            got = fn(counts, model, router)
        except NotImplementedError:
            return _not_written("cost_with_router")
        per_route = np.array([model.flops(r)["total"] for r in range(model.depth)])
        want = (np.dot(counts, per_route) / np.sum(counts) + router.flops()["total"]) \
            / model.flops()["total"]
        assert abs(float(got) - want) < 1e-9, (
            f"cost_with_router({counts}, ...): expected {want:.4f} of the full route, received "
            f"{float(got):.4f}"
            + (" (the router runs on every image: add its multiply-adds once per image)"
               if abs(float(got) - (want - router.flops()["total"] / model.flops()["total"])) < 1e-9
               else ""))
    print("passed: cost_with_router; the paper's router, as large as CNN1, adds 1.0 to every mix")
