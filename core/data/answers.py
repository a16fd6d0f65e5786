"""Answer extraction and grading, behind a registry of extractors.

Extraction is anchored to each format's marker:

- ``gsm8k``: the number right after the ``####`` of the last line that starts with
  ``####`` and goes on with a number (``#### 18``, ``#### $1,234.50``); whatever follows
  that number (``#### 12 + 12 = 24 stickers`` reads 12, ``#### 1,234 dollars`` reads
  1,234) is not part of it, as in lm-evaluation-harness's strict-match. A Markdown
  header such as ``#### Step 2: ...`` is not an answer.
- ``metamath``: the text after the last ``The answer is:`` to the end of its line,
  as MetaMath's own evaluation takes it.
- ``boxed``: the contents of the last ``\\boxed{...}`` (nested braces kept).
- ``synthetic``: the answer line of the synthetic-math preset, ``#### The result is n .``.
- ``last-number``: the last number in the text; used only when asked for (``fallback``),
  never behind a format that defines a marker.

Grading (``answers_match``) normalizes both sides (Unicode minus, ``{,}``, thin
spaces, ``$`` and ``%`` signs, thousands separators in groups of three, trailing
unit words), compares numerically when both are plain numbers, and lets
math-verify decide everything else (fractions, roots, intervals, sets, LaTeX).

Where overmem differs from lm-evaluation-harness's gsm8k filters, on purpose:
strict-match takes the FIRST ``#### n`` anywhere in a line; overmem takes the last one
that starts a line (a model may restate a draft answer before its final one). Its
flexible-extract takes the last number of the whole text; overmem takes a number
only after its marker, so ``#### It is not 18`` is wrong here and right there.
strict-match's number is ``-?[0-9.,]+`` right after ``#### ``; overmem also reads a
currency sign, a ``+`` or Unicode minus and spaces before it (``#### $12`` counts as 12 here
and nothing there), and a comma only between digits (``#### 12, so`` reads 12 in both).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
# a plain number: thousands separators only in groups of three
_PLAIN = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$|^[-+]?\.\d+$")
_GSM8K_LINE = re.compile(r"^[ \t]*####[ \t]*(.*)$", re.MULTILINE)
# The number that opens a gsm8k answer line and nothing after it: lm-eval's strict-match
# reads "-?[0-9.,]+" there, so "#### 12 + 12 = 24" is 12, not the equation.
_GSM8K_ANSWER = re.compile(r"^\$?\s*[-+−]?\s*\$?\s*(?:\d+(?:,\d+)*(?:\.\d+)?|\.\d+)")
_SYNTHETIC = re.compile(r"####\s*The result is\s*(-?\d+(?:\.\d+)?)")
_UNIT_WORDS = re.compile(r"^(.*?\d)(?:\s+[A-Za-z][A-Za-z.]*)+$")


def _gsm8k(text: str) -> str | None:
    """The number (with its sign and currency sign) opening the last ``####`` line that
    opens with one; None when no such line exists. Spaces inside it are dropped, so
    ``#### $ -3`` reads ``$-3``, which grading understands."""
    found = None
    for match in _GSM8K_LINE.finditer(text):
        number = _GSM8K_ANSWER.match(match.group(1).strip())
        if number:
            found = number.group(0)
    return re.sub(r"\s+", "", found) if found else None


def _after_marker(marker: str) -> Callable[[str], str | None]:
    def extract(text: str) -> str | None:
        at = text.rfind(marker)
        if at < 0:
            return None
        rest = text[at + len(marker) :].strip().split("\n")[0].strip()
        return rest.rstrip(". ").strip() or None

    return extract


def _boxed(text: str) -> str | None:
    at = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if at < 0:
        return None
    start = text.index("{", at) + 1
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[start:i].strip() or None
            depth -= 1
    return None


def _synthetic(text: str) -> str | None:
    found = _SYNTHETIC.findall(text)
    return found[-1] if found else None


def _last_number(text: str) -> str | None:
    found = _NUMBER.findall(normalize(text))
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


register(Extractor("gsm8k", 'the number on the last line starting with "####"', _gsm8k))
register(Extractor("metamath", 'text after the last "The answer is:"', _after_marker("The answer is:")))
register(Extractor("boxed", "contents of the last \\boxed{...}", _boxed))
register(Extractor("synthetic", 'the number of the last "#### The result is n ." (synthetic-math)', _synthetic))
register(Extractor("last-number", "the last number in the text", _last_number))

# The formats a reference (gold) may state its answer in, tried in order by "auto".
GOLD_FORMATS = ("gsm8k", "metamath", "boxed")
ANSWER_FORMATS = ("auto",) + tuple(EXTRACTORS)


def extract_answer(text: str, formats: tuple[str, ...] | list[str], fallback: bool = True) -> str | None:
    """The answer a generation states: the first format that finds one, else (with
    ``fallback``) the last number."""
    for name in formats:
        found = EXTRACTORS[name].extract(text)
        if found is not None:
            return found
    return _last_number(text) if fallback else None


_GOLD_GSM8K = re.compile(r"####\s*(\$?\s*[-+\u2212]?\s*\$?\s*(?:\d|\.\d)[^\n]*)")


def gold_answer(reference: str, answer_format: str) -> str | None:
    """The gold answer a reference states in its dataset's format ("auto": the first marker found).

    A reference's ``#### n`` counts anywhere in its line (a dataset is not a model that
    writes Markdown headers); predictions need it at the start of a line.
    """
    formats = GOLD_FORMATS if answer_format == "auto" else (answer_format,)
    for name in formats:
        if name == "gsm8k":
            found = _GOLD_GSM8K.findall(reference)
            if found:
                return found[-1].strip().rstrip(". ").strip() or None
            continue
        found = EXTRACTORS[name].extract(reference)
        if found is not None:
            return found
    return None


def normalize(text: str) -> str:
    """Spelling-only normalization shared by both sides of a comparison."""
    out = text.strip()
    for old, new in (("\u2212", "-"), ("{,}", ","), ("\\!", ""), ("\\,", ""), ("\u2009", ""), ("\u202f", ""),
                     ("\u00a0", " "), ("\\$", "$"), ("\\%", "%")):
        out = out.replace(old, new)
    return out.strip()


def plain_number(text: str) -> float | None:
    """The value of ``text`` when it is a plain number after normalization: currency and
    percent signs, thousands separators in groups of three and trailing unit words
    allowed; anything else (letters before, operators, LaTeX, a second number) is not."""
    t = normalize(text).rstrip(".").strip()
    if t.startswith("$") and t.endswith("$") and len(t) > 1 and t.count("$") == 2:
        t = t[1:-1].strip()  # math delimiters
    t = t.lstrip("$").strip()
    if t.startswith("-$") or t.startswith("+$"):
        t = t[0] + t[2:]
    units = _UNIT_WORDS.match(t)
    if units:
        t = units.group(1).strip()
    t = t.rstrip("%").strip()
    if not _PLAIN.match(t):
        return None
    try:
        return float(t.replace(",", ""))
    except ValueError:
        return None


def normalize_number(text: str) -> float | None:
    """Kept for callers of the earlier API: the plain-number value, or None."""
    return plain_number(text)


def answers_match(predicted: str | None, gold: str | None) -> bool:
    """True when ``predicted`` states the same answer as ``gold`` (see the module doc)."""
    if predicted is None or gold is None:
        return False
    a, b = plain_number(predicted), plain_number(gold)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    if normalize(predicted) == normalize(gold):
        return True
    return _symbolic_match(normalize(predicted), normalize(gold))


def _as_math(text: str) -> str:
    t = text.strip()
    if t.startswith("$") and t.endswith("$") and len(t) > 1:
        return t
    return f"${t}$"


def _timeout() -> int | None:
    """math-verify's timeouts use signal.alarm, which exists only in the main thread; in
    worker threads (the TUI, the demo) it runs without one (its own warning is silenced)."""
    import logging
    import threading

    if threading.current_thread() is threading.main_thread():
        return 5
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return None


@lru_cache(maxsize=4096)
def _parsed(text: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(_as_math(text), extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                 parsing_timeout=_timeout())


def _symbolic_match(predicted: str, gold: str) -> bool:
    from math_verify import verify

    try:
        gold_parsed, pred_parsed = _parsed(gold), _parsed(predicted)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=_timeout()))
    except Exception:  # math-verify raises on unparsable input or timeouts: that is "no match"
        return False
