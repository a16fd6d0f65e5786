"""Probe metrics as pure functions (numpy only), each checked against a brute-force twin in tests."""

from __future__ import annotations

import math
import zlib
from collections import Counter
from typing import Sequence

import numpy as np


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties counting 1/2 (Mann-Whitney U)."""
    pos, neg = np.asarray(positives, float), np.asarray(negatives, float)
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def tpr_at_fpr(positives: Sequence[float], negatives: Sequence[float], fpr: float = 0.05) -> float:
    """Highest true-positive rate among thresholds whose false-positive rate is at most ``fpr``
    (a sample counts as positive when its score is >= the threshold)."""
    pos, neg = np.sort(np.asarray(positives, float)), np.sort(np.asarray(negatives, float))
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    thresholds = np.unique(np.concatenate([pos, neg, [np.inf]]))
    # counts of scores >= each threshold, from sorted arrays (O(n log n), not a loop)
    neg_rate = (len(neg) - np.searchsorted(neg, thresholds, side="left")) / len(neg)
    pos_rate = (len(pos) - np.searchsorted(pos, thresholds, side="left")) / len(pos)
    allowed = neg_rate <= fpr
    return float(pos_rate[allowed].max()) if allowed.any() else 0.0


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = 10):
    """ECE over ``bins`` equal-width bins of [0, 1], and the reliability-diagram rows
    (lower, upper, count, accuracy, mean confidence) of the non-empty bins."""
    conf = np.clip(np.asarray(confidence, float), 0.0, 1.0)
    ok = np.asarray(correct, float)
    n = len(conf)
    if n == 0:
        return math.nan, []
    index = np.minimum((conf * bins).astype(int), bins - 1)
    ece, rows = 0.0, []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        if count == 0:
            continue
        acc, mean_conf = float(ok[members].mean()), float(conf[members].mean())
        ece += count / n * abs(acc - mean_conf)
        rows.append({"lower": b / bins, "upper": (b + 1) / bins, "count": count, "accuracy": acc,
                     "confidence": mean_conf})
    return float(ece), rows


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_vote(answers: Sequence[str | None], gold_match) -> bool:
    """Whether the most frequent non-empty answer is correct (ties: the first seen)."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return False
    top = max(counts.values())
    winner = next(a for a in answers if a is not None and counts[a] == top)
    return bool(gold_match(winner))


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over a set of texts (whitespace tokens)."""
    grams = [g for t in texts for g in ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def ead(texts: Sequence[str], n: int, vocab_size: int) -> float:
    """Expectation-adjusted distinct n-grams (Liu et al. 2022): distinct n-grams divided by
    the number expected when drawing as many n-grams uniformly from a vocabulary of V:
    V * (1 - ((V - 1) / V) ** C). V is the token vocabulary size."""
    grams = [g for t in texts for g in ngrams(t.split(), n)]
    if not grams:
        return 0.0
    v, c = float(vocab_size), len(grams)
    expected = v * (1.0 - ((v - 1.0) / v) ** c)
    return len(set(grams)) / expected


def semantic_diversity(embeddings: np.ndarray) -> float:
    """1 - mean pairwise cosine similarity of a set of sentence embeddings."""
    e = np.asarray(embeddings, float)
    if len(e) < 2:
        return 0.0
    e = e / np.clip(np.linalg.norm(e, axis=1, keepdims=True), 1e-12, None)
    sims = e @ e.T
    n = len(e)
    mean = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    return float(1.0 - mean)


def zlib_score(mean_nll: float, text: str) -> float:
    """Zlib MIA score: mean NLL over the zlib-compressed length of the text (bytes)."""
    return mean_nll / max(1, len(zlib.compress(text.encode("utf-8"))))


def min_k(values: Sequence[float], k: float = 0.2) -> float:
    """Mean of the k fraction lowest values (at least one)."""
    v = np.sort(np.asarray(values, float))
    if len(v) == 0:
        return math.nan
    return float(v[: max(1, int(len(v) * k))].mean())


def bootstrap_interval(compute, units: int, strata: Sequence[int] = (), rounds: int = 200, seed: int = 0,
                       level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of every metric ``compute(indices)`` returns, resampling
    units with replacement (within each stratum, so groups keep their sizes)."""
    rng = np.random.default_rng(seed)
    groups = {}
    for i, g in enumerate(strata or [0] * units):
        groups.setdefault(g, []).append(i)
    draws: dict[str, list[float]] = {}
    for _ in range(rounds):
        idx = [int(i) for members in groups.values() for i in rng.choice(members, size=len(members))]
        for name, value in compute(idx).items():
            draws.setdefault(name, []).append(value)
    tail = (1 - level) / 2 * 100
    out = {}
    for name, values in draws.items():
        v = np.asarray(values, float)
        v = v[~np.isnan(v)]
        out[name] = (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) if len(v) else \
            (math.nan, math.nan)
    return out
