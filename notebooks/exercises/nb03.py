"""Checks for the exercises of notebook 3 (strongest activations).

Each check runs the learner's function on cases whose answers npskip's own code
gives, then prints a line starting "passed", or raises AssertionError saying what
is wrong. A function that still raises NotImplementedError is reported as not
written yet, so the notebook runs on. Reference solutions: ../solutions/nb03.py.
"""

import numpy as np

from npskip.paper.ranking import label_images, top_images


def _not_written(name):
    print(f"{name}: not written yet (raise NotImplementedError is still there); "
          f"a reference solution is in solutions/nb03.py")


def check_top_images(fn):
    """fn(scores (N, M), k) -> (M, k) image indices, best first, ties to the lower index."""
    rng = np.random.default_rng(3)
    cases = [(rng.random((40, 3)), 5),
             (rng.integers(0, 3, size=(30, 4)).astype(float), 6),   # many equal scores
             (np.zeros((7, 2)), 7)]                                 # every score equal
    for scores, k in cases:
        try:
            got = fn(scores.copy(), k)
        except NotImplementedError:
            return _not_written("top_images")
        want = top_images(scores, k)
        got = np.asarray(got)
        assert got.shape == want.shape, (
            f"top_images: expected shape {want.shape} (maps, k) for scores {scores.shape} and "
            f"k={k}, received {got.shape}")
        for j in range(scores.shape[1]):
            if not np.array_equal(got[j], want[j]):
                tied = len(np.unique(scores[:, j])) < len(scores)
                raise AssertionError(
                    f"top_images: map {j} of scores {scores.shape}, k={k}: expected images "
                    f"{want[j].tolist()}, received {got[j].tolist()}"
                    + (" (this map has equal scores: ties go to the lower image index)"
                       if tied else ""))
    print("passed: top_images picks the k best images of every map, ties to the lower index")


def _reference_counts(tops, maps):
    _, labels, _ = label_images([np.asarray(t)[:maps] for t in tops])
    return np.bincount(labels, minlength=len(tops)).tolist()


def check_label_counts(fn, tops=None):
    """fn(tops (layers, M, K), maps) -> images per label 0..layers-1 with the first ``maps`` maps."""
    rng = np.random.default_rng(4)
    cases = [rng.integers(0, 60, size=(3, 10, 10)), rng.integers(0, 25, size=(3, 6, 4))]
    if tops is not None:
        cases.insert(0, np.asarray(tops))
    for t in cases:
        for maps in sorted({1, 2, t.shape[1] // 2, t.shape[1]}):
            try:
                got = fn(t.copy(), maps)
            except NotImplementedError:
                return _not_written("label_counts")
            want = _reference_counts(t, maps)
            got = [int(v) for v in np.asarray(got).ravel()]
            assert got == want, (
                f"label_counts: with the first {maps} maps of tops {t.shape}, expected "
                f"{want} images per label, received {got}"
                + (" (an image picked by several layers counts once, under the highest)"
                   if sum(got) > sum(want) else ""))
    print("passed: label_counts gives the images per label for any number of maps")
