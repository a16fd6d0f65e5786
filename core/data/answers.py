"""Answer extraction and comparison, behind a registry of extractors.

Gold answers are parsed with their dataset's format; predictions with the
run's answer formats in order, then (unless strict) the last number in the text.
Numbers compare numerically after stripping commas, units, "$" and trailing
".0"; math-verify decides symbolic answers when it is installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _after_marker(marker: str) -> Callable[[str], str | None]:
    def extract(text: str) -> str | None:
        at = text.rfind(marker)
        if at < 0:
            return None
        rest = text[at + len(marker) :].strip()
        # the answer ends at the end of its line (or the next sentence end)
        rest = rest.split("\n")[0].strip()
        return rest.rstrip(". ").strip() or None

    return extract


def _boxed(text: str) -> str | None:
    at = text.rfind("\\boxed{")
    if at < 0:
        return None
    depth, start = 0, at + len("\\boxed{")
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[start:i].strip() or None
            depth -= 1
    return None


def _last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1] if found else None


@dataclass(frozen=True)
class Extractor:
    name: str
    help: str
    extract: Callable[[str], str | None]


EXTRACTORS: dict[str, Extractor] = {}


def register(extractor: Extractor) -> Extractor:
    EXTRACTORS[extractor.name] = extractor
    return extractor


register(Extractor("gsm8k", 'text after the last "####"', _after_marker("####")))
register(Extractor("metamath", 'text after the last "The answer is:"', _after_marker("The answer is:")))
register(Extractor("boxed", "contents of the last \\boxed{...}", _boxed))
register(Extractor("last-number", "the last number in the text", _last_number))


def extract_answer(text: str, formats: tuple[str, ...] | list[str], fallback: bool = True) -> str | None:
    """The answer a generation states: the first format that finds one, else the last number."""
    for name in formats:
        found = EXTRACTORS[name].extract(text)
        if found is not None:
            return found
    return _last_number(text) if fallback else None


def normalize_number(text: str) -> float | None:
    """'1,234.0 dollars' -> 1234.0; None when the text holds no single number."""
    cleaned = text.replace(",", "").replace("$", "").strip()
    match = _NUMBER.search(cleaned)
    if not match:
        return None
    rest = (cleaned[: match.start()] + cleaned[match.end() :]).strip()
    # units and trailing words are allowed; a second number or an operator is not
    if _NUMBER.search(rest) or any(op in rest for op in "/*^="):
        return None
    try:
        return float(match.group(0).replace(",", ""))
    except ValueError:
        return None


def answers_match(predicted: str | None, gold: str | None) -> bool:
    if predicted is None or gold is None:
        return False
    a, b = normalize_number(predicted), normalize_number(gold)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    if predicted.strip() == gold.strip():
        return True
    return _symbolic_match(predicted, gold)


def _symbolic_match(predicted: str, gold: str) -> bool:
    try:
        from math_verify import parse, verify  # optional dependency
    except ImportError:
        return False
    try:
        return bool(verify(parse(gold), parse(predicted)))
    except Exception:  # math-verify raises on unparsable input; that is "no match"
        return False


GOLD_FORMATS = ("gsm8k", "metamath", "boxed")


def gold_answer(reference: str, answer_format: str) -> str | None:
    """The gold answer a reference states in its dataset's format ("auto": the first marker found)."""
    formats = GOLD_FORMATS if answer_format == "auto" else (answer_format,)
    return extract_answer(reference, formats, fallback=False)
