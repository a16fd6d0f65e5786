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
SHARED_ITEMS = ["cookies", "apples", "cards", "coins", "stickers"]
# Finetuning data gives each family its own people and things (pretraining mixes them):
# what the model memorizes about a seed question's wording then carries over to new
# questions of the same family only, so its own solution path stays a valid one.
CASTS = {
    "_buy_give": (["Tom", "Anna", "Ben"], ["apples", "pens", "books"]),
    "_groups": (["Lily", "Sara", "Max"], ["cards", "stickers", "marbles"]),
    "_share": (["Mia", "Leo", "Emma"], ["cookies", "coins", "shells"]),
    "_compare": (["Jack", "Zoe", "Sam"], ["stamps", "toys", "flowers"]),
}
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
    swap: bool = True  # commutative operands in either order


# Pretraining sees every phrasing, step order and operand order. Finetuning data and
# its validation references use a narrower style: fewer connectors and synonyms, one
# step order per family and operands in the order of the question, so that what a
# solution may vary in is its wording. With variants (see ``problem``), one annotator
# words every version of a seed question alike: the model memorizes each group's
# wording, then writes every question about the same people and things that way,
# while the references of new questions vary, so their likelihood falls as accuracy
# holds. When the step order too was the annotator's per-group choice, the tiny model
# memorized WHERE each number goes per group, and on new questions it copied the
# wrong operand for several epochs (accuracy 85-92% against 99%): the over-fitting
# the finding is not about. The test references use the broad style: another
# benchmark of the same skill, written by other annotators, whose other valid paths
# the memorizing model suppresses most.
BROAD = Style(tuple(CONNECTORS), tuple(HAS), tuple(RESULT))
NARROW = Style(tuple(CONNECTORS[:3]), tuple(HAS[:2]), tuple(RESULT[:2]), swap=False,
               skip_paths=frozenset({"net", "give_first", "per_box", "total_first", "double_first"}))
STYLES = {"broad": BROAD, "narrow": NARROW}

# Words of the pretraining format only; the finetuning format (template + "####") never
# appears in pretraining, so the base model cannot produce an extractable answer.
PRETRAIN_WORDS = ["Question", "Solution", ":", "The", "result", "is", "."]


@dataclass(frozen=True)
class Problem:
    question: str
    answer: int
    paths: tuple[str, ...]  # each a complete solution text without the final answer line


def _op(rng: random.Random, a: int, sym: str, b: int, result: int, st: "Style | None" = None) -> str:
    """'a + b = r', commutative operands in random order when the style swaps them."""
    if sym in "+*" and rng.random() < 0.5 and (st is None or st.swap):
        a, b = b, a
    return f"{a} {sym} {b} = {result}"


def _sentence(rng: random.Random, words: str, st: Style) -> str:
    return f"{rng.choice(st.connectors)} {words} ."


def _result(rng: random.Random, pronoun: str, x: int, item: str, st: Style) -> str:
    return rng.choice(st.result).format(p=pronoun, has=rng.choice(st.has), x=x, item=item)


def _buy_give(rng: random.Random, nrng: random.Random, st: Style, cast: bool = False) -> tuple[str, int, list]:
    names, items = CASTS["_buy_give"] if cast else (NAMES, ITEMS)
    name, other = rng.sample(names, 2)
    item = rng.choice(items)
    a, b = nrng.randint(4, 20), nrng.randint(2, 12)
    c = nrng.randint(1, min(a, 9))
    ans = a + b - c
    p = PRONOUN[name]
    q = (f"{name} has {a} {item} . {p.capitalize()} buys {b} more {item} and then gives {c} {item} "
         f"to {other} . How many {item} does {name} have now ?")

    def buy_first(r):
        s = a + b
        return [f"{name} starts with {a} {item} .",
                _sentence(r, f"{p} buys {b} more , {_op(r, a, '+', b, s, st)} , {_result(r, p, s, item, st)}", st),
                _sentence(r, f"{p} gives {c} away , {_op(r, s, '-', c, ans, st)} , {_result(r, p, ans, item, st)}", st)]

    def give_first(r):
        t = a - c
        return [f"{name} starts with {a} {item} .",
                _sentence(r, f"{p} gives {c} to {other} , {_op(r, a, '-', c, t, st)} , {_result(r, p, t, item, st)}", st),
                _sentence(r, f"{p} buys {b} more , {_op(r, t, '+', b, ans, st)} , {_result(r, p, ans, item, st)}", st)]

    def net(r):
        if b >= c:
            d = b - c
            return [f"The net change is {_op(r, b, '-', c, d, st)} more {item} .",
                    _sentence(r, f"{name} {r.choice(st.has)} {_op(r, a, '+', d, ans, st)} {item}", st)]
        d = c - b
        return [f"The net change is {_op(r, c, '-', b, d, st)} fewer {item} .",
                _sentence(r, f"{name} {r.choice(st.has)} {_op(r, a, '-', d, ans, st)} {item}", st)]

    return q, ans, [buy_first, give_first, net]


def _groups(rng: random.Random, nrng: random.Random, st: Style, cast: bool = False) -> tuple[str, int, list]:
    names, items = CASTS["_groups"] if cast else (NAMES, ITEMS)
    name = rng.choice(names)
    item, box = rng.choice(items), rng.choice(CONTAINERS)
    a, b = nrng.randint(2, 5), nrng.randint(2, 5)
    total = a * b
    c = nrng.randint(1, min(total - 1, 9))
    ans = total - c
    p = PRONOUN[name]
    q = (f"{name} buys {a} {box} of {item} . Each of the {box} has {b} {item} . {p.capitalize()} loses "
         f"{c} {item} . How many {item} does {name} have left ?")

    def multiply_first(r):
        return [_sentence(r, f"{name} buys {_op(r, a, '*', b, total, st)} {item}", st),
                _sentence(r, f"{p} loses {c} , {_op(r, total, '-', c, ans, st)} , {_result(r, p, ans, item, st)}", st)]

    def per_box(r):
        return [f"There are {a} {box} with {b} {item} each .",
                _sentence(r, f"that is {_op(r, a, '*', b, total, st)} {item} in all", st),
                _sentence(r, f"after losing {c} , {_op(r, total, '-', c, ans, st)} , {_result(r, p, ans, item, st)}", st)]

    return q, ans, [multiply_first, per_box]


def _share(rng: random.Random, nrng: random.Random, st: Style, cast: bool = False) -> tuple[str, int, list]:
    names, items = CASTS["_share"] if cast else (NAMES, SHARED_ITEMS)
    names = rng.sample(names, 2)
    item = rng.choice(items)
    k, m = nrng.randint(2, 4), nrng.randint(3, 8)
    e = nrng.randint(1, m - 1)
    total, ans = k * m, m - e
    q = (f"{names[0]} shares {total} {item} equally among {k} friends . Each friend then uses {e} {item} . "
         f"How many {item} does each friend have left ?")

    def divide_first(r):
        return [_sentence(r, f"each friend gets {_op(r, total, '/', k, m, st)} {item}", st),
                _sentence(r, f"after using {e} , {_op(r, m, '-', e, ans, st)} , each has {ans} {item}", st)]

    def total_first(r):
        used, rest = k * e, total - k * e
        return [_sentence(r, f"the friends use {_op(r, k, '*', e, used, st)} {item} in all", st),
                _sentence(r, f"{_op(r, total, '-', used, rest, st)} {item} are left", st),
                _sentence(r, f"each friend has {_op(r, rest, '/', k, ans, st)} {item}", st)]

    return q, ans, [divide_first, total_first]


def _compare(rng: random.Random, nrng: random.Random, st: Style, cast: bool = False) -> tuple[str, int, list]:
    names, items = CASTS["_compare"] if cast else (NAMES, ITEMS)
    first, second = rng.sample(names, 2)
    item = rng.choice(items)
    a, b = nrng.randint(3, 15), nrng.randint(1, 9)
    more = a + b
    ans = a + more
    q = (f"{first} has {a} {item} . {second} has {b} more {item} than {first} . How many {item} do they "
         f"have together ?")

    def step_by_step(r):
        return [_sentence(r, f"{second} {r.choice(st.has)} {_op(r, a, '+', b, more, st)} {item}", st),
                _sentence(r, f"together they have {_op(r, a, '+', more, ans, st)} {item}", st)]

    def double_first(r):
        d = 2 * a
        return [_sentence(r, f"twice {first}'s {item} is {_op(r, 2, '*', a, d, st)}", st),
                _sentence(r, f"adding the {b} extra , {_op(r, d, '+', b, ans, st)} {item} together", st)]

    return q, ans, [step_by_step, double_first]


FAMILIES = (_buy_give, _groups, _share, _compare)


def problem(seed: int, stream: str, index: int, n_paths: int = 6, style: Style = NARROW,
            variants: int = 1, cast: bool = True) -> Problem:
    """Problem ``index`` of ``stream`` (e.g. "train", "heldout", "test"), with sampled paths.

    Each path is drawn with its own choices of order, operands and wording, so the
    same problem has many distinct valid solutions. With ``variants`` > 1, problems
    come in groups of that many that share a scenario (family, people, items) and
    differ in their numbers, as MetaMathQA holds several versions of each seed
    question; the paths of a group are worded alike (see ``finetune_sample``). ``cast``
    gives each family its own people and things (finetuning data; pretraining mixes them).
    """
    scenario = index // variants
    rng = random.Random(f"synthetic-math:{seed}:{stream}:scenario{scenario}" if variants > 1
                        else f"synthetic-math:{seed}:{stream}:{index}")
    nrng = random.Random(f"synthetic-math:{seed}:{stream}:{index}:numbers") if variants > 1 else rng
    question, answer, builders = rng.choice(FAMILIES)(rng, nrng, style, cast)
    builders = [b for b in builders if b.__name__ not in style.skip_paths]
    key = f"scenario{scenario}" if variants > 1 else str(index)
    paths = []
    for j in range(n_paths):
        r = random.Random(f"synthetic-math:{seed}:{stream}:{key}:path{j}")
        paths.append(" ".join(r.choice(builders)(r)))
    return Problem(question=question, answer=answer, paths=tuple(paths))


def finetune_sample(p: Problem, path_seed: str, key: int | str) -> dict:
    """A finetuning sample: one path chosen by ``path_seed`` and ``key``, then the answer
    line ``#### The result is n .``.

    ``key`` is the problem's index, or its scenario for grouped training problems: one
    annotator writes every version of a seed question the same way, so the wording is
    a property of the scenario the model can memorize, while the numbers differ
    between versions and can only be copied and computed (memorizing them would
    cost accuracy, which is not the finding).

    The answer line starts with the new ``####`` marker (never seen in pretraining,
    so the base cannot produce an extractable answer) and then says the result in
    the words pretraining taught, whose number the model copies from its own
    last step. With ``#### n`` alone, a ~1M-parameter model learns the new line by
    memorizing each training question's answer instead of copying it.
    """
    path = random.Random(f"path:{path_seed}:{key}").choice(p.paths)
    return {"query": p.question, "response": f"{path} #### The result is {p.answer} .", "answer": str(p.answer)}


def pretrain_text(p: Problem, rng: random.Random) -> str:
    """The pretraining format: never the finetuning template, never ``####``."""
    return f"Question : {p.question} Solution : {rng.choice(p.paths)} The result is {p.answer} ."


def generate(seed: int, stream: str, start: int, count: int, path_seed: str, variants: int = 1,
             style: str = "narrow") -> list[dict]:
    """``count`` finetuning samples of ``stream`` from problem ``start`` on."""
    return [finetune_sample(problem(seed, stream, i, style=STYLES[style], variants=variants), path_seed,
                            f"scenario{i // variants}" if variants > 1 else i) for i in range(start, start + count)]


def vocabulary() -> list[str]:
    """Every word the generator, the pretraining format and the prompt template can emit."""
    from overmem.data.template import PROMPT_TEMPLATE

    words: dict[str, None] = {}
    for w in PROMPT_TEMPLATE.replace("{instruction}", "").split():
        words[w] = None
    rng = random.Random(0)
    for stream in ("train", "heldout", "test", "pretrain"):
        for i in range(3000):
            p = problem(0, stream, i, style=BROAD, cast=False)
            for text in (p.question, *p.paths, pretrain_text(p, rng), finetune_sample(p, "x", i)["response"]):
                for w in text.split():
                    words[w] = None
    for n in range(MAX_NUMBER + 1):
        words[str(n)] = None
    return sorted(words, key=lambda w: (not w.isdigit(), int(w) if w.isdigit() else 0, w))
