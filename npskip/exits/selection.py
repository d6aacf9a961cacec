"""Choosing the exit threshold t on the validation split alone.

A user must pick one t before seeing any test image, and it has to hold on the
test set. The rule (docs/early-exits.md works through each step):

1. **Compare image by image.** At each t the cascade and CNN1 are judged on the
   same validation images; only images where they disagree move the difference
   (stats.paired_difference).
2. **Accept t only on evidence.** The upper confidence bound of the accuracy loss
   against CNN1 is exact, from the disagreements (stats.paired_loss_upper). A
   negative bound is a lead: the cascade is better than CNN1 by at least that much.
3. **Leave room for the test set's own luck** (``test_noise``): the bound plus the
   noise the validation disagreements predict for the test set's size must be
   within the tolerance (0.2 points).
4. **A fixed order.** Thresholds are tested from the highest t (least early exit)
   down; the first that fails ends the sequence, so the error rate of the choice
   as a whole stays at the stated level.
5. **A cost guard that needs no fit.** Of the accepted thresholds, take the one
   with the fewest multiply-adds (heads included), if it needs at most
   ``COST_LIMIT`` (2/3) of CNN1's; else fall back to CNN1. The cascade has no
   router in front, so its cost is what it counts; the measured wall-clock is
   recorded beside the choice as a check, not decided on, since timings on a
   shared machine are not reproducible.

The rule is given validation arrays and the test set's size, never its images.
"""

from dataclasses import dataclass

import numpy as np

from npskip.paper.stats import normal_quantile, paired_difference, paired_loss_upper

COST_LIMIT = 2 / 3    # a chosen threshold must save at least a third of CNN1's multiply-adds


@dataclass(frozen=True)
class Rule:
    """The rule's settings. tolerance: the accuracy loss against CNN1 (a fraction) the
    choice must stay within; confidence: one-sided level of the bound and the noise;
    judged_on: the test set's size (None: no test-noise reserve); cost_limit: the
    largest multiply-add fraction of CNN1's a choice may need."""
    tolerance: float = 0.002
    confidence: float = 0.95
    judged_on: int = None
    cost_limit: float = COST_LIMIT


def test_noise(disagreements, n_val, judged_on, confidence=0.95):
    """One-sided test noise of the accuracy difference predicted from validation:
    z * sqrt(D / n_val / judged_on), or 0 if judged_on is None.

    Where the two disagree (rate r = D / n_val) the per-image difference is +-1, so
    its standard deviation is at most sqrt(r), and its mean over ``judged_on`` new
    images moves by about sqrt(r / judged_on). z: the ``confidence`` normal quantile.
    """
    if judged_on is None:
        return 0.0
    if not isinstance(judged_on, (int, np.integer)) or judged_on < 1:
        raise ValueError(f"judged_on: expected a number of images >= 1, received {judged_on!r}")
    return float(normal_quantile(confidence) * np.sqrt(disagreements / n_val / judged_on))


def _check(thresholds, exited_right, cnn1_right, cost):
    if exited_right.dtype != bool or cnn1_right.dtype != bool:
        raise ValueError(f"choose_operating_point: expected boolean right-or-wrong arrays, "
                         f"received {exited_right.dtype} and {cnn1_right.dtype}")
    n_t = len(thresholds)
    shapes = [np.shape(cost[k]) for k in ("multiply_add_fraction", "wall_fraction")]
    if exited_right.shape != (n_t, len(cnn1_right)) or shapes != [(n_t,), (n_t,)]:
        raise ValueError(f"choose_operating_point: expected exited_right ({n_t}, N) with "
                         f"cnn1_right (N,) and one cost per threshold; received "
                         f"{exited_right.shape}, {cnn1_right.shape}, {shapes}")


def evidence_at(exited_right, cnn1_right, madds, wall, rule):
    """The record of one threshold: paired difference (cascade minus CNN1, with the
    exact "loss_upper"), its test noise, its costs, "within_tolerance" and "cheaper"."""
    diff = paired_difference(exited_right, cnn1_right, rule.confidence)
    diff["loss_upper"] = paired_loss_upper(diff["a_only"], diff["b_only"], diff["n"],
                                           rule.confidence)
    noise = test_noise(diff["a_only"] + diff["b_only"], diff["n"], rule.judged_on,
                       rule.confidence)
    return {"paired_difference": diff, "test_noise": noise,
            "multiply_add_fraction": float(madds), "measured_wall_fraction": float(wall),
            "within_tolerance": bool(diff["loss_upper"] + noise <= rule.tolerance),
            "cheaper": bool(madds <= rule.cost_limit)}


def choose_operating_point(thresholds, exited_right, cnn1_right, cost, rule=Rule()):
    """The cheapest threshold whose paired evidence on validation supports it, or CNN1.

    thresholds: (T,); exited_right: (T, N) bool, the cascade right on validation image
    i at threshold t; cnn1_right: (N,) bool; cost: {"multiply_add_fraction": (T,),
    "wall_fraction": (T,)} against CNN1's, on the validation images; rule: a Rule.

    Returns {"index": i or None (CNN1), "threshold": t or None, "decision": text,
    "evidence": evidence_at's record per threshold, plus "threshold" and "accepted"
    (it and every higher threshold are within the tolerance)}.
    """
    exited_right, cnn1_right = np.asarray(exited_right), np.asarray(cnn1_right)
    thresholds = [float(t) for t in thresholds]
    _check(thresholds, exited_right, cnn1_right, cost)
    evidence = [{"threshold": t, **evidence_at(exited_right[i], cnn1_right,
                                               cost["multiply_add_fraction"][i],
                                               cost["wall_fraction"][i], rule)}
                for i, t in enumerate(thresholds)]
    # Fixed-sequence testing: from the highest t down, accepted only while every
    # threshold so far is within the tolerance. Keeping any of 14 that passed would
    # let one pass by luck far more often than 5% of the time.
    still = True
    for i in sorted(range(len(thresholds)), key=lambda i: -thresholds[i]):
        still = still and evidence[i]["within_tolerance"]
        evidence[i]["accepted"] = still
    accepted = [i for i, e in enumerate(evidence) if e["accepted"]]
    both = [i for i in accepted if evidence[i]["cheaper"]]
    if not both:
        return {"index": None, "threshold": None, "evidence": evidence,
                "decision": fallback_words(thresholds, accepted, rule)}
    # fewest multiply-adds (counted, reproducible); a tie goes to the lower t
    pick = min(both, key=lambda i: (evidence[i]["multiply_add_fraction"], i))
    return {"index": pick, "threshold": thresholds[pick], "evidence": evidence,
            "decision": choice_words(evidence[pick], rule)}


def choice_words(e, rule):
    """The decision, in words, for the chosen threshold's record ``e``."""
    bound, n = e["paired_difference"]["loss_upper"], e["paired_difference"]["n"]
    # a negative bound on the loss is a lead: say it as one
    evidence = (f"its accuracy loss against CNN1 on {n} validation images is at most "
                f"{100 * bound:.2f} points" if bound >= 0 else
                f"it is more accurate than CNN1 on {n} validation images, by at least "
                f"{-100 * bound:.2f} points")
    noise = (f", plus {100 * e['test_noise']:.2f} points of test noise predicted for "
             f"{rule.judged_on} images" if rule.judged_on else "")
    return (f"t = {e['threshold']:.4g}: {evidence} ({100 * rule.confidence:.0f}% confidence "
            f"bound{noise}; tolerance {100 * rule.tolerance:.1f}), at "
            f"{e['multiply_add_fraction']:.3f} of CNN1's multiply-adds (wall-clock measured on "
            f"validation: {e['measured_wall_fraction']:.2f})")


def fallback_words(thresholds, accepted, rule):
    """Why CNN1 is used: no threshold accepted, or none cheap enough."""
    if not accepted:
        return (f"no threshold's accuracy loss is within {100 * rule.tolerance:.1f} points of "
                f"CNN1 at {100 * rule.confidence:.0f}% confidence on validation"
                + (" with its predicted test noise" if rule.judged_on else "") + ": CNN1 is used")
    return (f"thresholds within the tolerance (t = "
            f"{', '.join(f'{thresholds[i]:.4g}' for i in accepted)}) all need more than "
            f"{rule.cost_limit:.3g} of CNN1's multiply-adds: CNN1 is used")
