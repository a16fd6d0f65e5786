"""A seeded generator of GSM8K-style arithmetic word problems (preset ``synthetic-math``).

Every problem can be solved along several valid reasoning paths: different step
orders, swapped operands, connectors and phrasings. A training sample gets one
path chosen by the training stream; validation and test references get another
random one. A model that memorizes its training paths grows more certain of its
own wording, so references worded otherwise lose likelihood while its answers
stay right: the over-memorization the demo shows, in minutes on a CPU.

Numbers stay small (at most ``MAX_NUMBER``, operands at most 20) so each is one token of the tiny
model's word-level vocabulary and the arithmetic itself stays easy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MAX_NUMBER = 60

NAMES = ["Tom", "Anna", "Ben", "Lily", "Sara", "Max", "Mia", "Leo", "Emma", "Jack", "Zoe", "Sam"]
PRONOUN = {n: ("she" if n in {"Anna", "Lily", "Sara", "Mia", "Emma", "Zoe"} else "he") for n in NAMES}
ITEMS = ["apples", "pens", "books", "cards", "stickers", "marbles", "cookies", "coins", "shells", "stamps",
         "toys", "flowers"]
CONTAINERS = ["boxes", "bags", "packs", "jars", "baskets", "crates"]
CONNECTORS = ["So", "Then", "Next", "Now", "After that", "This means", "Therefore"]
HAS = ["has", "holds", "keeps", "owns"]
RESULT = ["so {p} {has} {x} {item}", "which leaves {x} {item}", "that makes {x} {item}",
          "giving {x} {item}"]


@dataclass(frozen=True)
class Style:
    """The wording choices a solution draws from."""

    connectors: tuple[str, ...]
    has: tuple[str, ...]
    result: tuple[str, ...]
    skip_paths: frozenset[str] = frozenset()  # names of solution paths this style never uses


# Pretraining sees every phrasing; finetuning data and its references use a narrower
# style (fewer connectors and synonyms). Paths and operand orders stay free, so a
# reference still differs from a training solution in many places, but the best
# achievable perplexity drops (~1.2), so memorizing the training choices shows as a
# large relative rise of log-ppl, as it does for real models at ppl 3-5.
# The narrow style also leaves out the "net change" path of the buy-and-give problems:
# it is the one path that needs a comparison (more or fewer?), and it was the first
# thing the tiny model lost while memorizing (on seed 1, 7 of 16 such answers wrong
# after 30 epochs, against 2 of 11 on the other buy-and-give paths), which pulled
# accuracy clearly below its best on some seeds. Without it accuracy stays within noise of its best while
# log-ppl rises, which is the finding the demo is about.
BROAD = Style(tuple(CONNECTORS), tuple(HAS), tuple(RESULT))
NARROW = Style(tuple(CONNECTORS[:3]), tuple(HAS[:2]), tuple(RESULT[:2]), skip_paths=frozenset({"net"}))

# Words of the pretraining format only; the finetuning format (template + "####") never
# appears in pretraining, so the base model cannot produce an extractable answer.
PRETRAIN_WORDS = ["Question", "Solution", ":", "The", "result", "is", "."]


@dataclass(frozen=True)
class Problem:
    question: str
    answer: int
    paths: tuple[str, ...]  # each a complete solution text without the final answer line


def _op(rng: random.Random, a: int, sym: str, b: int, result: int) -> str:
    """'a + b = r' with commutative operands in random order."""
    if sym in "+*" and rng.random() < 0.5:
        a, b = b, a
    return f"{a} {sym} {b} = {result}"


def _sentence(rng: random.Random, words: str, st: Style) -> str:
    return f"{rng.choice(st.connectors)} {words} ."


def _result(rng: random.Random, pronoun: str, x: int, item: str, st: Style) -> str:
    return rng.choice(st.result).format(p=pronoun, has=rng.choice(st.has), x=x, item=item)


def _buy_give(rng: random.Random, st: Style) -> tuple[str, int, list]:
    name, other = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    a, b = rng.randint(4, 20), rng.randint(2, 12)
    c = rng.randint(1, min(a, 9))
    ans = a + b - c
    p = PRONOUN[name]
    q = (f"{name} has {a} {item} . {p.capitalize()} buys {b} more {item} and then gives {c} {item} "
         f"to {other} . How many {item} does {name} have now ?")

    def buy_first(r):
        s = a + b
        return [f"{name} starts with {a} {item} .",
                _sentence(r, f"{p} buys {b} more , {_op(r, a, '+', b, s)} , {_result(r, p, s, item, st)}", st),
                _sentence(r, f"{p} gives {c} away , {_op(r, s, '-', c, ans)} , {_result(r, p, ans, item, st)}", st)]

    def give_first(r):
        t = a - c
        return [f"{name} starts with {a} {item} .",
                _sentence(r, f"{p} gives {c} to {other} , {_op(r, a, '-', c, t)} , {_result(r, p, t, item, st)}", st),
                _sentence(r, f"{p} buys {b} more , {_op(r, t, '+', b, ans)} , {_result(r, p, ans, item, st)}", st)]

    def net(r):
        if b >= c:
            d = b - c
            return [f"The net change is {_op(r, b, '-', c, d)} more {item} .",
                    _sentence(r, f"{name} {r.choice(st.has)} {_op(r, a, '+', d, ans)} {item}", st)]
        d = c - b
        return [f"The net change is {_op(r, c, '-', b, d)} fewer {item} .",
                _sentence(r, f"{name} {r.choice(st.has)} {_op(r, a, '-', d, ans)} {item}", st)]

    return q, ans, [buy_first, give_first, net]


def _groups(rng: random.Random, st: Style) -> tuple[str, int, list]:
    name = rng.choice(NAMES)
    item, box = rng.choice(ITEMS), rng.choice(CONTAINERS)
    a, b = rng.randint(2, 5), rng.randint(2, 5)
    total = a * b
    c = rng.randint(1, min(total - 1, 9))
    ans = total - c
    p = PRONOUN[name]
    q = (f"{name} buys {a} {box} of {item} . Each of the {box} has {b} {item} . {p.capitalize()} loses "
         f"{c} {item} . How many {item} does {name} have left ?")

    def multiply_first(r):
        return [_sentence(r, f"{name} buys {_op(r, a, '*', b, total)} {item}", st),
                _sentence(r, f"{p} loses {c} , {_op(r, total, '-', c, ans)} , {_result(r, p, ans, item, st)}", st)]

    def per_box(r):
        return [f"There are {a} {box} with {b} {item} each .",
                _sentence(r, f"that is {_op(r, a, '*', b, total)} {item} in all", st),
                _sentence(r, f"after losing {c} , {_op(r, total, '-', c, ans)} , {_result(r, p, ans, item, st)}", st)]

    return q, ans, [multiply_first, per_box]


def _share(rng: random.Random, st: Style) -> tuple[str, int, list]:
    names = rng.sample(NAMES, 2)
    item = rng.choice(["cookies", "apples", "cards", "coins", "stickers"])
    k, m = rng.randint(2, 4), rng.randint(3, 8)
    e = rng.randint(1, m - 1)
    total, ans = k * m, m - e
    q = (f"{names[0]} shares {total} {item} equally among {k} friends . Each friend then uses {e} {item} . "
         f"How many {item} does each friend have left ?")

    def divide_first(r):
        return [_sentence(r, f"each friend gets {_op(r, total, '/', k, m)} {item}", st),
                _sentence(r, f"after using {e} , {_op(r, m, '-', e, ans)} , each has {ans} {item}", st)]

    def total_first(r):
        used, rest = k * e, total - k * e
        return [_sentence(r, f"the friends use {_op(r, k, '*', e, used)} {item} in all", st),
                _sentence(r, f"{_op(r, total, '-', used, rest)} {item} are left", st),
                _sentence(r, f"each friend has {_op(r, rest, '/', k, ans)} {item}", st)]

    return q, ans, [divide_first, total_first]


def _compare(rng: random.Random, st: Style) -> tuple[str, int, list]:
    first, second = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    a, b = rng.randint(3, 15), rng.randint(1, 9)
    more = a + b
    ans = a + more
    q = (f"{first} has {a} {item} . {second} has {b} more {item} than {first} . How many {item} do they "
         f"have together ?")

    def step_by_step(r):
        return [_sentence(r, f"{second} {r.choice(st.has)} {_op(r, a, '+', b, more)} {item}", st),
                _sentence(r, f"together they have {_op(r, a, '+', more, ans)} {item}", st)]

    def double_first(r):
        d = 2 * a
        return [_sentence(r, f"twice {first}'s {item} is {_op(r, 2, '*', a, d)}", st),
                _sentence(r, f"adding the {b} extra , {_op(r, d, '+', b, ans)} {item} together", st)]

    return q, ans, [step_by_step, double_first]


FAMILIES = (_buy_give, _groups, _share, _compare)


def problem(seed: int, stream: str, index: int, n_paths: int = 6, style: Style = NARROW) -> Problem:
    """Problem ``index`` of ``stream`` (e.g. "train", "heldout", "test"), with sampled paths.

    Each path is drawn with its own choices of order, operands and wording, so the
    same problem has many distinct valid solutions.
    """
    rng = random.Random(f"synthetic-math:{seed}:{stream}:{index}")
    question, answer, builders = rng.choice(FAMILIES)(rng, style)
    builders = [b for b in builders if b.__name__ not in style.skip_paths]
    paths = []
    for j in range(n_paths):
        r = random.Random(f"synthetic-math:{seed}:{stream}:{index}:path{j}")
        paths.append(" ".join(r.choice(builders)(r)))
    return Problem(question=question, answer=answer, paths=tuple(paths))


def finetune_sample(p: Problem, path_seed: str, index: int) -> dict:
    """A finetuning sample: one path chosen by ``path_seed``, then the answer line
    ``#### The result is n .``.

    The answer line starts with the new ``####`` marker (never seen in pretraining,
    so the base cannot produce an extractable answer) and then says the result in
    the words pretraining taught, whose number the model copies from its own
    last step. With ``#### n`` alone, a ~1M-parameter model learns the new line by
    memorizing each training question's answer instead of copying it.
    """
    path = random.Random(f"path:{path_seed}:{index}").choice(p.paths)
    return {"query": p.question, "response": f"{path} #### The result is {p.answer} .", "answer": str(p.answer)}


def pretrain_text(p: Problem, rng: random.Random) -> str:
    """The pretraining format: never the finetuning template, never ``####``."""
    return f"Question : {p.question} Solution : {rng.choice(p.paths)} The result is {p.answer} ."


def generate(seed: int, stream: str, start: int, count: int, path_seed: str) -> list[dict]:
    """``count`` finetuning samples of ``stream`` from problem ``start`` on."""
    return [finetune_sample(problem(seed, stream, i), path_seed, i) for i in range(start, start + count)]


def vocabulary() -> list[str]:
    """Every word the generator, the pretraining format and the prompt template can emit."""
    from overmem.data.template import PROMPT_TEMPLATE

    words: dict[str, None] = {}
    for w in PROMPT_TEMPLATE.replace("{instruction}", "").split():
        words[w] = None
    rng = random.Random(0)
    for stream in ("train", "heldout", "test", "pretrain"):
        for i in range(3000):
            p = problem(0, stream, i, style=BROAD)
            for text in (p.question, *p.paths, pretrain_text(p, rng), finetune_sample(p, "x", i)["response"]):
                for w in text.split():
                    words[w] = None
    for n in range(MAX_NUMBER + 1):
        words[str(n)] = None
    return sorted(words, key=lambda w: (not w.isdigit(), int(w) if w.isdigit() else 0, w))
