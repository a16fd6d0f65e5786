"""Batched generation with transformers: KV cache, left padding, stop markers, end-of-turn ids.

Greedy (evaluation) and sampled (probes) generation stop at the same markers as the
vLLM backend; ``generators.trim`` then cuts both the same way.
"""

from __future__ import annotations


def _stop_options(tokenizer, prompt_width: int, markers: tuple[str, ...]) -> dict:
    """``generate`` arguments that end a row once it has produced a marker.

    transformers' ``stop_strings`` match token strings against the markers without
    decoding. Where it cannot read a tokenizer's vocabulary (a word-level tokenizer, whose
    decoder puts spaces between tokens, such as the shipped tiny model's), each step
    decodes the tail of every row instead.
    """
    if not markers:
        return {}
    from transformers import StopStringCriteria

    try:
        # built here only to learn whether it can be; transformers caches what it computes
        StopStringCriteria(tokenizer, list(markers))
    except ValueError:  # raised by its vocabulary analysis on tokenizers it does not understand
        return {"stopping_criteria": _decoded_stop(tokenizer, prompt_width, markers)}
    return {"stop_strings": list(markers), "tokenizer": tokenizer}


def _decoded_stop(tokenizer, prompt_width: int, markers: tuple[str, ...]):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnMarker(StoppingCriteria):
        """Per-row stop once the generated tail contains a marker (any tokenizer)."""

        def __call__(self, input_ids, scores, **kwargs):
            tails = tokenizer.batch_decode(input_ids[:, max(prompt_width, input_ids.shape[1] - 12):],
                                           skip_special_tokens=True)
            return torch.tensor([any(m in t for m in markers) for t in tails], device=input_ids.device)

    return StoppingCriteriaList([StopOnMarker()])


def _logprob_recorder():
    """A logits processor that keeps, per step, only the log-probability of the token sampled
    at that step: O(rows x steps) floats where generate's ``output_logits`` keeps O(rows x
    steps x vocabulary)."""
    import torch
    from transformers import LogitsProcessor

    class SampledLogprobs(LogitsProcessor):
        """Sees the scores before the sampling warpers (temperature, top-k, top-p): the model's
        raw logits, as ``output_logits`` returned them, when the model's generation config adds
        no processor of its own (a repetition penalty would count here).

        A step's token is known only at the next call (the last token of ``input_ids``), so the
        log-softmax of one step waits in ``pending`` until then; ``finish`` gathers the last one.
        """

        def __init__(self) -> None:
            self.taken: list = []  # one (rows,) tensor per step whose token is known
            self.pending = None  # (rows, vocab): the newest step's log-softmax, its token not yet drawn

        def __call__(self, input_ids, scores):
            if self.pending is not None:
                self.taken.append(self.pending.gather(1, input_ids[:, -1:]).squeeze(1))
            self.pending = scores.float().log_softmax(-1)
            return scores

        def finish(self, sequences, prompt_width: int):
            """(rows, generated tokens): the log-probability of each token of ``sequences`` after the
            prompt (steps transformers undid at the end are dropped)."""
            steps = sequences.shape[1] - prompt_width
            if self.pending is not None and steps > len(self.taken):
                self.taken.append(self.pending.gather(1, sequences[:, prompt_width + len(self.taken)][:, None])
                                  .squeeze(1))
            self.pending = None
            if not self.taken:
                return sequences.new_zeros((sequences.shape[0], 0), dtype=torch.float32)
            return torch.stack(self.taken, dim=1)[:, :steps]

    return SampledLogprobs()


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
                                     eos_token_id=eos, **_stop_options(tokenizer, ids.shape[1], stops),
                                     # greedy needs no sampling knobs; silence generation_config defaults
                                     temperature=None, top_p=None, top_k=None)
                for row, i in enumerate(batch):
                    out[i] = _strip(gen[row, ids.shape[1]:].tolist(), pad, eos)
                if progress:
                    progress(len(batch))
    finally:
        model.train(was_training)
    return [o if o is not None else [] for o in out]


def sample_batch(model, tokenizer, ids, mask, n: int, temperature: float, max_new_tokens: int,
                 stops: tuple[str, ...], eos: list[int]):
    """One batch of ``n`` samples per prompt row: the sequences (prompt included, rows*n of them)
    and the (rows*n, generated tokens) log-probability of each generated token under the
    model's untempered distribution (past a row's end, its padding's: cut with the row)."""
    from transformers import LogitsProcessorList

    recorder = _logprob_recorder()
    sequences = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature,
                               top_p=1.0, top_k=0, num_return_sequences=n, max_new_tokens=max_new_tokens,
                               pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                               logits_processor=LogitsProcessorList([recorder]),
                               output_logits=False, output_scores=False, return_dict_in_generate=False,
                               **_stop_options(tokenizer, ids.shape[1], stops))
    return sequences, recorder.finish(sequences, ids.shape[1])


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
                sequences, logps = sample_batch(model, tokenizer, ids, mask, n, temperature, max_new_tokens,
                                                stops, eos)
                width = ids.shape[1]
                for row in range(len(batch) * n):
                    tokens = _strip(sequences[row, width:].tolist(), pad, eos)
                    slot = batch[row // n]
                    out[slot] = (out[slot] or []) + [(tokens, logps[row, : len(tokens)].tolist())]
    finally:
        model.train(was_training)
    return [o or [] for o in out]
