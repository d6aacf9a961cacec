"""Reference solutions for the exercises of notebook 4. Try them yourself first."""

import math


def wilson(correct, n, z=1.96):
    """The 95% Wilson score interval of correct/n: the p whose normal interval reaches correct/n."""
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def images_needed(p, half_width, z=1.96):
    """Fewest n with z * sqrt(p (1 - p) / n) <= half_width (the normal approximation)."""
    return math.ceil(z * z * p * (1 - p) / half_width ** 2)
