"""Turning (query, response) rows into token ids with the prompt masked, and batching them."""

from __future__ import annotations

from dataclasses import dataclass

from overmem.data.template import PROMPT_TEMPLATE, render_prompt

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + response (+ EOS); the first ``n_prompt`` are masked from losses."""

    input_ids: tuple[int, ...]
    n_prompt: int

    @property
    def n_response(self) -> int:
        return len(self.input_ids) - self.n_prompt


def encode_prompt(tokenizer, query: str, template: str = PROMPT_TEMPLATE) -> list[int]:
    """Prompt ids exactly as training saw them (the tokenizer's own BOS convention)."""
    return list(tokenizer(render_prompt(query, template), add_special_tokens=True)["input_ids"])


def encode(tokenizer, query: str, response: str, template: str = PROMPT_TEMPLATE,
           max_len: int | None = None) -> Encoded:
    """Prompt and response are tokenized separately and joined, so the boundary is exact
    and identical at training, perplexity and generation time. EOS ends the response
    (the model learns to stop; it counts as a response token)."""
    prompt = encode_prompt(tokenizer, query, template)
    response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        response_ids.append(tokenizer.eos_token_id)
    ids = prompt + response_ids
    if max_len is not None and len(ids) > max_len:
        ids = ids[:max_len]
    return Encoded(tuple(ids), min(len(prompt), len(ids)))


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
