"""Each probe metric against an independent straightforward implementation on fixed inputs."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from overmem.probes import metrics as m


def brute_auroc(pos, neg):
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return total / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(10))
def test_auroc_equals_pair_count(seed):
    rng = random.Random(seed)
    pos = [rng.choice([0.1, 0.2, 0.3, 0.5, 0.9]) + rng.random() * (seed % 2) for _ in range(rng.randint(1, 30))]
    neg = [rng.choice([0.1, 0.2, 0.3, 0.4]) + rng.random() * (seed % 2) for _ in range(rng.randint(1, 30))]
    assert m.auroc(pos, neg) == pytest.approx(brute_auroc(pos, neg), abs=1e-12)


def test_auroc_edges():
    assert m.auroc([2, 3], [0, 1]) == 1.0 and m.auroc([0, 1], [2, 3]) == 0.0 and m.auroc([1], [1]) == 0.5
    assert math.isnan(m.auroc([], [1]))


def test_tpr_at_5pct_fpr_hand_checked():
    # 20 negatives 0..19; 10 positives. The lowest threshold admitting at most 1/20 = 5%
    # of negatives is 18.5 (only 19 passes): positives >= 18.5 are 18.5, 19.5, 25, 30 -> 4/10.
    neg = list(range(20))
    pos = [1, 2, 5, 8, 10, 12, 18.5, 19.5, 25, 30]
    assert m.tpr_at_fpr(pos, neg, 0.05) == pytest.approx(0.4)
    # at 0% FPR the threshold must pass 19: 19.5, 25, 30 -> 3/10
    assert m.tpr_at_fpr(pos, neg, 0.0) == pytest.approx(0.3)
    # at 25% FPR the threshold 15 admits 15..19: positives >= 15 -> 4/10; 12 would admit 8/20
    assert m.tpr_at_fpr(pos, neg, 0.25) == pytest.approx(0.4)
    assert m.tpr_at_fpr([5, 6], [1, 2], 0.0) == 1.0


def test_ece_hand_computed():
    conf = [0.05, 0.15, 0.85, 0.95, 0.92, 0.55]
    correct = [False, True, True, True, False, True]
    # bins: [0,.1): {.05 wrong} |0-.05|=.05 ; [.1,.2): {.15 right} |1-.15|=.85 ; [.5,.6): {.55 right} .45
    # [.8,.9): {.85 right} .15 ; [.9,1]: {.95 right, .92 wrong} acc .5 conf .935 -> .435 (x2)
    expected = (0.05 + 0.85 + 0.45 + 0.15 + 2 * 0.435) / 6
    ece, rows = m.expected_calibration_error(conf, correct, bins=10)
    assert ece == pytest.approx(expected)
    assert [r["count"] for r in rows] == [1, 1, 1, 1, 2]
    assert rows[-1]["accuracy"] == 0.5 and rows[-1]["confidence"] == pytest.approx(0.935)
    assert m.expected_calibration_error([1.0], [True], bins=5)[0] == 0.0


@pytest.mark.parametrize("n,c,k", [(5, 0, 1), (5, 1, 1), (5, 2, 3), (10, 3, 5), (4, 4, 2), (8, 1, 8)])
def test_pass_at_k_closed_form(n, c, k):
    closed = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert m.pass_at_k(n, c, k) == pytest.approx(closed)


def test_distinct_and_ead_on_small_strings():
    texts = ["a b a b", "a c"]
    # unigrams: a b a b a c -> 3 distinct / 6 ; bigrams: ab ba ab ac -> 3 / 4
    assert m.distinct_n(texts, 1) == pytest.approx(3 / 6)
    assert m.distinct_n(texts, 2) == pytest.approx(3 / 4)
    v = 10
    assert m.ead(texts, 1, v) == pytest.approx(3 / (v * (1 - (9 / 10) ** 6)))
    assert m.ead(texts, 2, v) == pytest.approx(3 / (v * (1 - (9 / 10) ** 4)))
    assert m.distinct_n(["a"], 2) == 0.0


def test_semantic_diversity_and_min_k_and_vote():
    same = np.array([[1.0, 0.0], [2.0, 0.0]])
    assert m.semantic_diversity(same) == pytest.approx(0.0)
    orth = np.array([[1.0, 0.0], [0.0, 3.0]])
    assert m.semantic_diversity(orth) == pytest.approx(1.0)
    assert m.min_k([5, 1, 4, 2, 3], 0.4) == pytest.approx(1.5)
    assert m.min_k([5, 1], 0.2) == 1.0
    assert m.majority_vote(["3", "4", "3", None], lambda a: a == "3")
    assert not m.majority_vote(["4", "3"], lambda a: a == "3")  # tie: first seen
    assert m.zlib_score(2.0, "abc") == pytest.approx(2.0 / len(__import__("zlib").compress(b"abc")))


def test_bootstrap_interval_over_queries():
    values = [1.0] * 70 + [0.0] * 30
    ci = m.bootstrap_interval(lambda idx: {"acc": sum(values[i] for i in idx) / len(idx)}, len(values), rounds=400)
    low, high = ci["acc"]
    assert low < 0.7 < high and 0.05 < high - low < 0.25  # about +-1.96 sqrt(.21/100) = +-0.09
    # strata keep their sizes: members and non-members resampled apart
    strata = [0] * 50 + [1] * 50
    seen = []
    m.bootstrap_interval(lambda idx: seen.append(sum(1 for i in idx if i < 50)) or {"x": 0.0}, 100, strata, rounds=20)
    assert set(seen) == {50}


def test_better_only_when_the_intervals_are_apart():
    from overmem.probes.compare import ProbeRow

    apart = ProbeRow("diversity", "pass@3", {"ep3": 0.80, "ep10": 0.60}, "higher",
                     {"ep3": (0.74, 0.86), "ep10": (0.52, 0.68)})
    assert apart.best() == "ep3"
    overlapping = ProbeRow("diversity", "pass@3", {"ep3": 0.80, "ep10": 0.74}, "higher",
                           {"ep3": (0.72, 0.88), "ep10": (0.66, 0.82)})
    assert overlapping.best() is None
    lower = ProbeRow("calibration", "ece", {"ep3": 0.10, "ep10": 0.20}, "lower",
                     {"ep3": (0.07, 0.13), "ep10": (0.15, 0.25)})
    assert lower.best() == "ep3"
    assert ProbeRow("calibration", "mean_confidence", {"a": 0.5, "b": 0.9}, None).best() is None
