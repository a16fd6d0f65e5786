"""Gradings per second: plain numbers (the fast path) and LaTeX answers (math-verify),
each against a baseline measured in the same run: the bare float comparison a naive
grader would do. Cold (first sight of each answer) and warm (parses cached).
Run: .venv/bin/python benchmarks/answers.py"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from overmem.data import answers  # noqa: E402


def rate(pairs, grade) -> float:
    start = time.perf_counter()
    for predicted, gold in pairs:
        grade(predicted, gold)
    return len(pairs) / (time.perf_counter() - start)


def naive(predicted: str, gold: str) -> bool:
    try:
        return float(predicted.replace(",", "")) == float(gold.replace(",", ""))
    except ValueError:
        return predicted == gold


def main() -> None:
    rng = random.Random(0)
    numbers = [(f"{rng.randint(0, 10**6):,}", str(rng.randint(0, 10**6))) for _ in range(20000)]
    latex_forms = ["\\frac{{{a}}}{{{b}}}", "\\sqrt{{{a}}}", "{a}\\pi", "({a}, {b}]", "\\dfrac{{{a}}}{{{b}}}", "{a}^{{{b}}}"]
    latex = []
    for _ in range(400):
        a, b = rng.randint(1, 50), rng.randint(2, 9)
        form = rng.choice(latex_forms)
        latex.append((form.format(a=a, b=b), rng.choice(latex_forms).format(a=a, b=b)))
    answers.answers_match("\\frac{1}{2}", "0.5")  # import and warm math-verify once
    base = rate(numbers, naive)
    fast = rate(numbers, answers.answers_match)
    print(f"plain numbers: {fast:,.0f} gradings/s ({fast / base:.2f}x the bare float comparison, "
          f"{base:,.0f}/s)")
    answers._parsed.cache_clear()
    cold = rate(latex, answers.answers_match)
    warm = rate(latex, answers.answers_match)
    print(f"LaTeX via math-verify: {cold:,.0f} gradings/s cold, {warm:,.0f}/s with parses cached "
          f"({cold / base:.5f}x / {warm / base:.4f}x the bare comparison)")
    mixed = numbers[:1900] + latex[:100]
    answers._parsed.cache_clear()
    print(f"a GSM8K-like mix (95% plain numbers): {rate(mixed, answers.answers_match):,.0f} gradings/s")


if __name__ == "__main__":
    main()
