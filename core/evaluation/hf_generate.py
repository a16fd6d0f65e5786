"""Batched greedy generation with transformers: KV cache, left padding, stop markers."""

from __future__ import annotations

from overmem.data.template import STOP_MARKER


def cut_at_marker(text: str, marker: str = STOP_MARKER) -> str:
    at = text.find(marker)
    return (text[:at] if at >= 0 else text).strip()


def _stop_criteria(tokenizer, prompt_width: int, marker: str):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnMarker(StoppingCriteria):
        """Per-row stop once the generated tail contains the marker (any tokenizer)."""

        def __call__(self, input_ids, scores, **kwargs):
            tails = tokenizer.batch_decode(input_ids[:, max(prompt_width, input_ids.shape[1] - 12):],
                                           skip_special_tokens=True)
            return torch.tensor([marker in t for t in tails], device=input_ids.device)

    return StoppingCriteriaList([StopOnMarker()])


def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 16,
             device: str = "cpu", marker: str = STOP_MARKER, progress=None) -> list[list[int]]:
    """Greedy continuations (token ids, without the prompt) of each prompt, in input order."""
    import torch

    from overmem.data.encoding import Encoded, collate
    from overmem.evaluation.perplexity import length_batches

    out: list[list[int] | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    try:
        with torch.inference_mode():
            for batch in length_batches([len(p) for p in prompts], batch_size):
                ids, mask, _ = collate([Encoded(tuple(prompts[i]), len(prompts[i])) for i in batch], pad,
                                       multiple=1, left=True)
                ids, mask = ids.to(device), mask.to(device)
                gen = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    use_cache=True,
                    pad_token_id=pad,
                    eos_token_id=eos,
                    stopping_criteria=_stop_criteria(tokenizer, ids.shape[1], marker),
                    # greedy needs no sampling knobs; silence generation_config defaults
                    temperature=None,
                    top_p=None,
                    top_k=None,
                )
                for row, i in enumerate(batch):
                    tokens = gen[row, ids.shape[1]:].tolist()
                    if eos is not None and eos in tokens:
                        tokens = tokens[: tokens.index(eos) + 1]
                    while tokens and tokens[-1] == pad and pad != eos:
                        tokens.pop()
                    out[i] = tokens
                if progress:
                    progress(len(batch))
    finally:
        model.train(was_training)
    return [o if o is not None else [] for o in out]
