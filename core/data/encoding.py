"""Turning (query, response) rows into token ids with the prompt masked, and batching them."""

from __future__ import annotations

from dataclasses import dataclass

from overmem.data.template import PROMPT_TEMPLATE, PromptFormat

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + response (+ EOS); the first ``n_prompt`` are masked from losses."""

    input_ids: tuple[int, ...]
    n_prompt: int
    truncated: bool = False  # the response was cut by max_len (then not all of it is scored)

    @property
    def n_response(self) -> int:
        return len(self.input_ids) - self.n_prompt


def _chat_text(tokenizer, turns: list[dict], generation_prompt: bool) -> str:
    from overmem.errors import DataError

    if not getattr(tokenizer, "chat_template", None):
        raise DataError("--template chat needs a tokenizer with a chat template; this one has none "
                        "(use --template alpaca, raw or a template file)")
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)


def _ids(tokenizer, text: str, specials: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=specials)["input_ids"])


def encode_prompt(tokenizer, query, template=PROMPT_TEMPLATE) -> list[int]:
    """Prompt ids as TRL's SFTTrainer makes them: a text prompt with the tokenizer's own
    special tokens (its BOS), or the chat template's rendering with the generation prompt."""
    fmt = PromptFormat.from_json(template)
    if fmt.kind == "chat":
        return _ids(tokenizer, _chat_text(tokenizer, fmt.messages(query), True), False)
    return _ids(tokenizer, fmt.render(query), True)


def _full_ids(tokenizer, query, response: str, fmt: PromptFormat) -> list[int]:
    """Prompt and reference tokenized together, as TRL does: a chat conversation through the
    template (its end-of-turn included), else the text with EOS appended as text."""
    if fmt.kind == "chat":
        turns = fmt.messages(query) + [{"role": "assistant", "content": response}]
        return _ids(tokenizer, _chat_text(tokenizer, turns, False), False)
    eos = tokenizer.eos_token or ""
    completion = response if not eos or response.endswith(eos) else response + eos
    return _ids(tokenizer, fmt.render(query) + completion, True)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode(tokenizer, query, response: str, template=PROMPT_TEMPLATE, max_len: int | None = None) -> Encoded:
    """Prompt + reference ids; the reference starts where the prompt alone and the whole
    sequence stop sharing tokens (TRL's rule: a chat template or a merge across the
    boundary may render the prompt's end differently). EOS or the end-of-turn token ends
    the reference and counts as a reference token: the model learns to stop."""
    fmt = PromptFormat.from_json(template)
    prompt = encode_prompt(tokenizer, query, fmt)
    ids = _full_ids(tokenizer, query, response, fmt)
    n_prompt = common_prefix(prompt, ids)
    truncated = max_len is not None and len(ids) > max_len
    if truncated:
        ids = ids[:max_len]
    return Encoded(tuple(ids), min(n_prompt, len(ids)), truncated)


def training_examples(tokenizer, rows: list[dict], template, max_len: int) -> tuple[list[Encoded], list[str]]:
    """The rows as training examples, and notes on what ``max_len`` did to them: a row whose
    response is cut away entirely would train on nothing and is dropped (DataError when none
    is left); one cut short trains on its first response tokens."""
    from overmem.errors import DataError

    encoded = [encode(tokenizer, r["query"], r["response"], template, max_len) for r in rows]
    kept = [e for e in encoded if e.n_response > 0]
    dropped, cut = len(encoded) - len(kept), sum(e.truncated for e in kept)
    if not kept:
        raise DataError(f"none of the {len(encoded)} training rows has a response token left within --max-len "
                        f"{max_len}: every prompt fills it; raise --max-len")
    notes = []
    if dropped:
        notes.append(f"{dropped} of {len(encoded)} training rows dropped: the prompt alone fills --max-len {max_len}, "
                     "so their response would train nothing")
    if cut:
        notes.append(f"{cut} of {len(encoded)} training rows cut at --max-len {max_len}: they train on the first "
                     "tokens of their response only")
    return kept, notes


def pad_width(longest: int, multiple: int) -> int:
    return -(-longest // multiple) * multiple if multiple > 1 else longest


def collate(batch: list[Encoded], pad_id: int, multiple: int = 16, left: bool = False):
    """(input_ids, attention_mask, labels) tensors; labels mask prompt and padding.

    Widths are rounded up to ``multiple``: CPU kernels are slow on every new
    sequence length, and GPUs like aligned shapes too.
    """
    import torch

    width = pad_width(max(len(e.input_ids) for e in batch), multiple)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        start = width - n if left else 0
        ids[row, start : start + n] = torch.tensor(e.input_ids)
        mask[row, start : start + n] = 1
        labels[row, start + e.n_prompt : start + n] = torch.tensor(e.input_ids[e.n_prompt :])
    return ids, mask, labels
