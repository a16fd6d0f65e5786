"""Sampling N outputs per prompt with per-token log-probabilities (vLLM or HF)."""

from __future__ import annotations

from overmem.data.template import STOP_MARKER


def hf_sample(model, tokenizer, prompts: list[list[int]], n: int, temperature: float, max_new_tokens: int,
              device: str, seed: int, batch_size: int = 8) -> list[list[tuple[list[int], list[float]]]]:
    """n samples per prompt (top_p 1.0), each with the log-probability of its tokens under the
    model's own (untempered) distribution."""
    import torch

    from overmem.data.encoding import Encoded, collate

    torch.manual_seed(seed)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    out = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            ids, mask, _ = collate([Encoded(tuple(p), len(p)) for p in chunk], pad, multiple=1, left=True)
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                                 temperature=temperature, top_p=1.0, top_k=0, num_return_sequences=n,
                                 max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos,
                                 output_logits=True, return_dict_in_generate=True)
            width = ids.shape[1]
            logps = torch.stack(gen.logits, dim=1).float().log_softmax(-1)  # (batch*n, steps, vocab)
            for row in range(len(chunk) * n):
                tokens = gen.sequences[row, width:].tolist()
                if eos in tokens:
                    tokens = tokens[: tokens.index(eos) + 1]
                lps = [float(logps[row, t, tok]) for t, tok in enumerate(tokens)]
                if row % n == 0:
                    out.append([])
                out[-1].append((tokens, lps))
    return out


def vllm_sample(generator, ckpt, tokenizer, prompts, n, temperature, max_new_tokens, seed):
    return generator.generate(ckpt, prompts, max_new_tokens, n=n, temperature=temperature, top_p=1.0,
                              stop=[STOP_MARKER], stop_token_ids=[tokenizer.eos_token_id], logprobs=True, seed=seed)
