"""Choosing the operating point without the test set: the paired difference and its
bounds, the rule on synthetic curves, its guard, and its reproducibility."""

import inspect
import math

import numpy as np
import pytest

from npskip.exits.selection import COST_LIMIT, Rule, choose_operating_point
from npskip.paper.stats import normal_quantile, paired_difference, paired_loss_upper


def test_paired_difference_against_a_direct_computation():
    # 10 images: a right on 8, b right on 6; they disagree on images 2 (a only),
    # 5 and 8 (a only) and 9 (b only)
    a = np.array([1, 1, 1, 1, 1, 1, 0, 1, 1, 0], dtype=bool)
    b = np.array([1, 1, 0, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    d = [0, 0, 1, 0, 0, 1, 0, 0, 1, -1]
    mean = sum(d) / 10                                          # 0.2
    var = sum((x - mean) ** 2 for x in d) / 9                   # sample variance, ddof 1
    se = math.sqrt(var / 10)
    z = 1.6448536269514722                                      # one-sided 95%
    out = paired_difference(a, b, confidence=0.95)
    assert out["n"] == 10 and out["a_only"] == 3 and out["b_only"] == 1
    assert out["mean"] == pytest.approx(0.2, abs=1e-15)
    assert out["se"] == pytest.approx(se, rel=1e-12)
    assert out["low"] == pytest.approx(mean - z * se, rel=1e-12)
    assert out["high"] == pytest.approx(mean + z * se, rel=1e-12)
    # the same numbers as the accuracies' difference, with the discordant images alone
    assert out["mean"] == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    # numbers as scores (the true class's probability) work the same way
    pa, pb = np.array([0.9, 0.8, 0.7]), np.array([0.7, 0.8, 0.4])
    q = paired_difference(pa, pb, confidence=0.9)
    assert q["mean"] == pytest.approx(np.mean(pa - pb), rel=1e-12)
    assert q["se"] == pytest.approx(np.std(pa - pb, ddof=1) / np.sqrt(3), rel=1e-12)
    assert q["low"] == pytest.approx(q["mean"] - 1.2815515655446004 * q["se"], rel=1e-12)
    assert "a_only" not in q
    assert normal_quantile(0.975) == pytest.approx(1.959963984540054, rel=1e-12)


def test_pairing_is_tighter_than_two_separate_accuracies(rng):
    # two networks right on ~98.7% of 6000 images that disagree on ~1.2% of them
    base = rng.random(6000) > 0.013
    flip = rng.random(6000) < 0.012
    a, b = base, np.where(flip, ~base, base)
    paired = paired_difference(a, b)["se"]
    unpaired = np.sqrt(a.mean() * (1 - a.mean()) / 6000 + b.mean() * (1 - b.mean()) / 6000)
    assert paired < 0.8 * unpaired


def test_paired_difference_names_bad_input():
    with pytest.raises(ValueError, match=r"two \(N,\) arrays of the same N"):
        paired_difference(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError, match="0 < p < 1"):
        paired_difference(np.ones(3, bool), np.ones(3, bool), confidence=1.0)


def synthetic(n=6000, seed=0, losses=(0.05, 0.02, 0.01, 0.004, 0.002, 0.0, 0.0),
              disagree=0.004):
    """A validation curve: CNN1 right on ~98.7%; at threshold i the routed network loses
    about losses[i] (a fraction) against it, and disagrees with it on `disagree` + 2 losses
    of the images. Cost falls as the loss rises."""
    rng = np.random.default_rng(seed)
    cnn1 = rng.random(n) > 0.013
    rows = []
    for loss in losses:
        routed = cnn1.copy()
        order = rng.permutation(n)
        # images CNN1 gets right and the routed network wrong (loss + disagree/2), and
        # the other way round (disagree/2): net loss `loss`
        worse = [i for i in order if cnn1[i]][:int(round(n * (loss + disagree / 2)))]
        better = [i for i in order if not cnn1[i]][:int(round(n * disagree / 2))]
        routed[worse], routed[better] = False, True
        rows.append(routed)
    t = np.linspace(0.5, 1.0, len(losses))
    flops = np.r_[np.linspace(0.1, 0.6, len(losses) - 1), 1.05]   # the last: the full route
    wall = 0.3 + 0.85 * flops                         # the shape measured on MNIST
    return t, np.array(rows), cnn1, flops, wall


def choose(t, right, cnn1, madds, wall, **rule):
    """choose_operating_point with the costs as one record and the rule's settings by name."""
    return choose_operating_point(t, right, cnn1, {"multiply_add_fraction": madds,
                                                   "wall_fraction": wall}, Rule(**rule))


def test_the_rule_takes_the_cheapest_point_its_evidence_supports():
    t, right, cnn1, flops, wall = synthetic()
    out = choose(t, right, cnn1, flops, wall, tolerance=0.002, confidence=0.95)
    # index 5 loses nothing, with about 12 + 12 discordant images: bound about 0.13 points
    ev = out["evidence"]
    bounds = [e["paired_difference"]["loss_upper"] for e in ev]
    ok = [i for i, u in enumerate(bounds) if u <= 0.002 and flops[i] <= COST_LIMIT]
    assert out["index"] == min(ok, key=lambda i: flops[i])
    assert out["threshold"] == t[out["index"]]
    assert all(ev[i]["accepted"] == (bounds[i] <= 0.002) for i in range(len(t)))
    # a looser tolerance reaches a cheaper point; a point that loses 0.4 points never passes
    loose = choose(t, right, cnn1, flops, wall, tolerance=0.004)
    assert loose["index"] is not None and flops[loose["index"]] < flops[out["index"]]
    assert not ev[3]["accepted"]                       # loses 0.4 points
    assert "validation images is at most" in out["decision"]


def test_the_bound_is_what_decides_not_the_point_estimate():
    # every point's estimate is within the tolerance, but only the low-noise one's bound is
    t, right, cnn1, flops, wall = synthetic(losses=(0.001, 0.001, 0.0), disagree=0.02)
    _, right2, _, _, _ = synthetic(losses=(0.001, 0.001, 0.0), disagree=0.002)
    mixed = np.array([right[0], right[1], right2[2]])
    out = choose(t, mixed, cnn1, [0.2, 0.4, 0.6], np.full(3, 0.5),
                                 tolerance=0.002)
    est = [-e["paired_difference"]["mean"] for e in out["evidence"]]
    assert max(est) <= 0.002 and out["index"] == 2


def test_the_rule_falls_back_to_cnn1_when_no_accepted_point_is_cheaper():
    t, right, cnn1, _, wall = synthetic()
    # the points within the tolerance (the last two) need 0.7 and 1.05 of CNN1's
    # multiply-adds: over the limit of 2/3
    flops = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.05])
    out = choose(t, right, cnn1, flops, wall, tolerance=0.002)
    assert out["evidence"][5]["accepted"] and not out["evidence"][5]["cheaper"]
    assert out["index"] is None and out["threshold"] is None
    assert "CNN1 is used" in out["decision"] and "more than 0.667 of CNN1's" in out["decision"]
    # whatever a timing says: a fast measured wall-clock does not let a point through,
    # and a looser limit does
    out = choose(t, right, cnn1, flops, np.full(len(t), 0.3), tolerance=0.002)
    assert out["index"] is None
    out = choose(t, right, cnn1, flops, wall, tolerance=0.002, cost_limit=0.8)
    assert out["evidence"][-1]["accepted"] and not out["evidence"][-1]["cheaper"]
    assert out["index"] == 5
    # and when nothing is within the tolerance, it says that instead
    t, right, cnn1, flops, wall = synthetic(losses=(0.05, 0.02, 0.01))
    out = choose(t, right, cnn1, flops, wall)
    assert out["index"] is None and "no threshold's accuracy loss" in out["decision"]


def test_the_cost_limit_admits_exactly_what_it_says():
    # a point at the limit passes, one just over it does not; the limit needs no fit
    t, right, cnn1, _, wall = synthetic(losses=(0.0, 0.0), disagree=0.0)
    out = choose(t, right, cnn1, [COST_LIMIT, 1.0], wall[:2])
    assert out["evidence"][0]["cheaper"] and out["index"] == 0
    out = choose(t, right, cnn1, [COST_LIMIT + 1e-9, 1.0], wall[:2])
    assert out["index"] is None


def test_the_rule_is_given_validation_data_only():
    params = list(inspect.signature(choose_operating_point).parameters)
    assert params == ["thresholds", "exited_right", "cnn1_right", "cost", "rule"]
    assert "validation" in inspect.getdoc(choose_operating_point)
    # the one thing it knows of the test set is how many images it has: a count
    assert "judged_on: the test set's size" in " ".join(inspect.getdoc(Rule).split())
    t, right, cnn1, flops, wall = synthetic()
    for bad in (np.ones(10), 0, 2.5):
        with pytest.raises(ValueError, match="judged_on: expected a number of images"):
            choose(t, right, cnn1, flops, wall, judged_on=bad)


def test_the_choice_is_reproducible_and_ignores_timing_noise(rng):
    t, right, cnn1, flops, wall = synthetic(losses=(0.02, 0.004, 0.0, 0.0, -0.001))
    first = choose(t, right, cnn1, flops, wall, tolerance=0.002)
    again = choose(t.copy(), right.copy(), cnn1.copy(), flops.copy(), wall.copy(),
                                   tolerance=0.002)
    assert first == again and first["index"] is not None
    # remeasured wall-clock moved by up to 1.4 of CNN1's time between reruns on the
    # busy build machine: the measured times are recorded, not decided on
    for _ in range(20):
        noisy = wall * rng.uniform(0.3, 2.0, len(wall))
        out = choose(t, right, cnn1, flops, noisy, tolerance=0.002)
        assert out["index"] == first["index"]
        assert [e["measured_wall_fraction"] for e in out["evidence"]] == noisy.tolist()


def test_the_rule_names_bad_input():
    t, right, cnn1, flops, wall = synthetic()
    with pytest.raises(ValueError, match="boolean"):
        choose(t, right.astype(float), cnn1, flops, wall)
    with pytest.raises(ValueError, match=r"expected exited_right \(7, N\)"):
        choose(t, right[:3], cnn1, flops, wall)


def test_the_exact_loss_bound_against_the_binomial_tail():
    # b (CNN1) wins 6 of the 13 images the two disagree on, out of 6000: the bound p_u on
    # P(CNN1 wins a disagreement) is where P(Binomial(13, p_u) <= 6) falls to 5%
    bound = paired_loss_upper(7, 6, 6000, 0.95)
    p_u = (bound * 6000 / 13 + 1) / 2
    tail = sum(math.comb(13, k) * p_u ** k * (1 - p_u) ** (13 - k) for k in range(7))
    assert tail == pytest.approx(0.05, abs=1e-9)
    # no disagreement: no lead; one image in the routed network's favour: a small bound,
    # where the normal approximation's standard error is as large as the mean
    assert paired_loss_upper(0, 0, 600) == 0.0
    assert paired_loss_upper(1, 0, 6000) == pytest.approx(0.9 / 6000)
    assert paired_loss_upper(0, 3, 6000) == pytest.approx(3 / 6000)   # all three CNN1's
    with pytest.raises(ValueError, match="0 <= a_only"):
        paired_loss_upper(5, 5, 8)


def test_a_threshold_below_a_refused_one_is_not_accepted():
    # losses by t (rising): 0.0 at the cheapest, 0.4 points in the middle, 0.0 above:
    # the cheapest is within the tolerance on its own, but the sequence from t = 1 down
    # stops at the middle one, so the rule takes the cheapest point above it
    t, right, cnn1, flops, wall = synthetic(losses=(0.0, 0.004, 0.0, 0.0), disagree=0.002)
    out = choose(t, right, cnn1, flops, wall, tolerance=0.002)
    within = [e["within_tolerance"] for e in out["evidence"]]
    accepted = [e["accepted"] for e in out["evidence"]]
    assert within == [True, False, True, True] and accepted == [False, False, True, True]
    assert out["index"] == 2


def test_a_point_that_beats_cnn1_is_worded_as_a_gain():
    # 6,000 images; the routed network wins 40 disagreements and loses 5: its loss is
    # negative even at its upper bound, and the decision says so as a gain.
    n = 6000
    cnn1 = np.ones(n, dtype=bool)
    cnn1[:40] = False                                  # CNN1 wrong where the routed net is right
    routed = np.ones(n, dtype=bool)
    routed[40:45] = False                              # and the reverse, on 5 images
    out = choose([0.9, 1.0], np.stack([routed, cnn1]), cnn1, [0.3, 1.0],
                                 [0.3, 1.0])
    assert out["threshold"] == 0.9
    assert out["evidence"][0]["paired_difference"]["loss_upper"] < 0
    assert "more accurate than CNN1 on 6000 validation images, by at least" in out["decision"]


def test_the_test_noise_reserved_grows_with_the_disagreements():
    from npskip.exits.selection import test_noise
    # 200 disagreements in 6,000 validation images, judged on 10,000: 1.645 x sqrt(1/300/1e4)
    assert test_noise(200, 6000, 10000) == pytest.approx(1.6448536 * np.sqrt(200 / 6000 / 1e4))
    assert test_noise(0, 6000, 10000) == 0.0 and test_noise(200, 6000, None) == 0.0
    # a threshold that loses nothing on average but disagrees with CNN1 on 600 of 6,000
    # images: its exact bound (0.69 points) is within a 1-point tolerance, but not with
    # the 0.52 points of test noise predicted for 10,000 test images
    n = 6000
    cnn1 = np.zeros(n, dtype=bool)
    cnn1[:300] = True                                  # CNN1 alone right on 300
    routed = np.zeros(n, dtype=bool)
    routed[300:600] = True                             # the routed network alone on 300
    routed_right = np.stack([routed, cnn1])
    flops, wall = [0.3, 1.0], [0.3, 1.0]
    alone = choose([0.5, 1.0], routed_right, cnn1, flops, wall, tolerance=0.01)
    judged = choose([0.5, 1.0], routed_right, cnn1, flops, wall, tolerance=0.01,
                                    judged_on=10000)
    noise = judged["evidence"][0]["test_noise"]
    bound = judged["evidence"][0]["paired_difference"]["loss_upper"]
    assert noise == pytest.approx(1.6448536 * np.sqrt(600 / n / 1e4))
    assert bound < 0.01 < bound + noise
    assert alone["threshold"] == 0.5 and judged["threshold"] is None
    assert judged["decision"].endswith("CNN1 is used")
    assert judged["evidence"][1]["test_noise"] == 0.0         # t = 1: CNN1 itself
