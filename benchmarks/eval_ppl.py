"""Tokens/s of overmem's perplexity pass vs a raw batched forward over the same tokens
(target >= 0.9x) and vs a naive per-sample loop (target >= 5x), on the tiny model and a
~100M-parameter random Llama.  Run: .venv/bin/python benchmarks/eval_ppl.py"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import params, random_llama, timed  # noqa: E402
from overmem.data import synthetic  # noqa: E402
from overmem.data.encoding import collate, encode  # noqa: E402
from overmem.evaluation import perplexity  # noqa: E402
from overmem.models.loading import load_model, load_tokenizer, resolve_base  # noqa: E402


def bench(model, tok, rows, batch_size: int) -> dict:
    model.eval()
    enc = [encode(tok, r["query"], r["response"]) for r in rows]
    tokens = sum(len(e.input_ids) for e in enc)

    def ours():
        return perplexity.score(model, enc, tok.pad_token_id, batch_size=batch_size)

    batches = perplexity.length_batches([len(e.input_ids) for e in enc], batch_size)
    tensors = [collate([enc[i] for i in b], tok.pad_token_id, 16) for b in batches]

    def raw():  # the same padded batches, forward only: the floor of any ppl pass
        with torch.inference_mode():
            for ids, mask, _ in tensors:
                model(input_ids=ids, attention_mask=mask, use_cache=False)

    def naive():  # one sample at a time, unpadded, as a straightforward script would
        with torch.inference_mode():
            for e in enc:
                logits = model(input_ids=torch.tensor([e.input_ids])).logits[0].float()
                lp = logits.log_softmax(-1)
                _ = -sum(lp[t - 1, e.input_ids[t]].item() for t in range(e.n_prompt, len(e.input_ids)))

    t_ours, _ = timed(ours, 3)
    t_raw, _ = timed(raw, 3)
    t_naive, _ = timed(naive, 1)
    return {"tokens": tokens, "ours_tok_s": tokens / t_ours, "raw_tok_s": tokens / t_raw,
            "naive_tok_s": tokens / t_naive, "vs_raw": t_raw / t_ours, "vs_naive": t_naive / t_ours}


def main() -> None:
    torch.set_num_threads(2)
    rows = synthetic.generate(0, "test", 0, 256, "reference")
    base = resolve_base("tiny")
    results = {}
    results["tiny"] = (params(load_model(base)), bench(load_model(base), load_tokenizer(base), rows, 32))
    with tempfile.TemporaryDirectory() as tmp:
        path = random_llama(Path(tmp) / "m100", hidden=768, layers=12, vocab=32000)
        ref = {"id": str(path), "path": str(path), "gguf_file": None}
        model = load_model(ref)
        results["~100M"] = (params(model), bench(model, load_tokenizer(ref), rows[:96], 16))
    print(f"{'model':8} {'params':>8} {'tokens':>7} {'ours tok/s':>11} {'raw tok/s':>10} {'naive tok/s':>12} "
          f"{'vs raw':>7} {'vs naive':>9}")
    for name, (p, r) in results.items():
        print(f"{name:8} {p:7.1f}M {r['tokens']:7d} {r['ours_tok_s']:11.0f} {r['raw_tok_s']:10.0f} "
              f"{r['naive_tok_s']:12.0f} {r['vs_raw']:6.2f}x {r['vs_naive']:8.2f}x")
    print("targets: vs raw >= 0.9x, vs naive >= 5x")


if __name__ == "__main__":
    main()
