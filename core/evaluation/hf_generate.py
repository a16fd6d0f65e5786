"""Batched generation with transformers: KV cache, left padding, stop markers, end-of-turn ids.

Greedy (evaluation) and sampled (probes) generation stop at the same markers as the
vLLM backend; ``generators.trim`` then cuts both the same way.
"""

from __future__ import annotations


def _stop_criteria(tokenizer, prompt_width: int, markers: tuple[str, ...]):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnMarker(StoppingCriteria):
        """Per-row stop once the generated tail contains a marker (any tokenizer)."""

        def __call__(self, input_ids, scores, **kwargs):
            tails = tokenizer.batch_decode(input_ids[:, max(prompt_width, input_ids.shape[1] - 12):],
                                           skip_special_tokens=True)
            return torch.tensor([any(m in t for m in markers) for t in tails], device=input_ids.device)

    return StoppingCriteriaList([StopOnMarker()]) if markers else None


def _batches(prompts: list[list[int]], batch_size: int, pad: int, device: str):
    from overmem.data.encoding import Encoded, collate
    from overmem.evaluation.perplexity import length_batches

    for batch in length_batches([len(p) for p in prompts], batch_size):
        ids, mask, _ = collate([Encoded(tuple(prompts[i]), len(prompts[i])) for i in batch], pad, multiple=1,
                               left=True)
        yield batch, ids.to(device), mask.to(device)


def _strip(tokens: list[int], pad: int, eos: list[int]) -> list[int]:
    cut = next((k for k, t in enumerate(tokens) if t in eos), None)
    if cut is not None:
        tokens = tokens[: cut + 1]
    while tokens and tokens[-1] == pad and pad not in eos:
        tokens.pop()
    return tokens


def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 16,
             device: str = "cpu", stops: tuple[str, ...] = (), eos: list[int] | None = None,
             progress=None) -> list[list[int]]:
    """Greedy continuations (token ids, without the prompt) of each prompt, in input order."""
    import torch

    out: list[list[int] | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id
    eos = eos or [tokenizer.eos_token_id]
    try:
        with torch.inference_mode():
            for batch, ids, mask in _batches(prompts, batch_size, pad, device):
                gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                     do_sample=False, num_beams=1, use_cache=True, pad_token_id=pad,
                                     eos_token_id=eos, stopping_criteria=_stop_criteria(tokenizer, ids.shape[1], stops),
                                     # greedy needs no sampling knobs; silence generation_config defaults
                                     temperature=None, top_p=None, top_k=None)
                for row, i in enumerate(batch):
                    out[i] = _strip(gen[row, ids.shape[1]:].tolist(), pad, eos)
                if progress:
                    progress(len(batch))
    finally:
        model.train(was_training)
    return [o if o is not None else [] for o in out]


def sample(model, tokenizer, prompts: list[list[int]], n: int, temperature: float, max_new_tokens: int,
           device: str, seed: int, stops: tuple[str, ...] = (), eos: list[int] | None = None,
           batch_size: int = 8) -> list[list[tuple[list[int], list[float]]]]:
    """n samples per prompt (top_p 1.0), each with the log-probability of its tokens under the
    model's own (untempered) distribution, in input order."""
    import torch

    torch.manual_seed(seed)
    pad = tokenizer.pad_token_id
    eos = eos or [tokenizer.eos_token_id]
    out: list[list | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch, ids, mask in _batches(prompts, batch_size, pad, device):
                gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature,
                                     top_p=1.0, top_k=0, num_return_sequences=n, max_new_tokens=max_new_tokens,
                                     pad_token_id=pad, eos_token_id=eos, output_logits=True,
                                     return_dict_in_generate=True,
                                     stopping_criteria=_stop_criteria(tokenizer, ids.shape[1], stops))
                width = ids.shape[1]
                logps = torch.stack(gen.logits, dim=1).float().log_softmax(-1)  # (batch*n, steps, vocab)
                for row in range(len(batch) * n):
                    tokens = _strip(gen.sequences[row, width:].tolist(), pad, eos)
                    lps = [float(logps[row, t, tok]) for t, tok in enumerate(tokens)]
                    slot = batch[row // n]
                    out[slot] = (out[slot] or []) + [(tokens, lps)]
    finally:
        model.train(was_training)
    return [o or [] for o in out]
