"""Pretrain the shipped ``tiny`` base model on the synthetic generator's broad distribution.

Writes core/assets/tiny/ (config, safetensors weights, word-level tokenizer). The
pretraining format ("Question : ... Solution : ... The result is n .") mixes all
solution paths and never shows the finetuning template or the "####" answer
line, so finetuning on synthetic-math starts at zero extractable accuracy and
learns the format in one epoch. Run: .venv/bin/python scripts/pretrain_tiny.py
(about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import time
from pathlib import Path

import torch

from overmem.data import synthetic
from overmem.models.tiny import TINY_DIR, build_tokenizer, tiny_config


def batches(tokenizer, rng: random.Random, batch_size: int):
    index = 0
    while True:
        texts = []
        for _ in range(batch_size):
            problem = synthetic.problem(0, "pretrain", index, style=synthetic.BROAD, cast=False)
            texts.append(synthetic.pretrain_text(problem, rng))
            index += 1
        ids = [[tokenizer.bos_token_id] + tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id]
               for t in texts]
        width = -(-max(map(len, ids)) // 16) * 16  # pad to a multiple of 16: fewer CPU kernel shapes
        input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)
        labels = torch.full((len(ids), width), -100)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, : len(seq)] = torch.tensor(seq)
        yield input_ids, labels, (input_ids != tokenizer.pad_token_id).long()


def accuracy(model, tokenizer, n: int = 200) -> float:
    """Greedy accuracy in the pretraining format on unseen problems."""
    model.eval()
    correct = 0
    for i in range(n):
        p = synthetic.problem(0, "heldout", 100000 + i, style=synthetic.BROAD, cast=False)
        prompt = f"Question : {p.question} Solution :"
        ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer.encode(prompt, add_special_tokens=False)])
        out = model.generate(ids, max_new_tokens=80, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        words = text.split()
        if "is" in words:
            tail = words[len(words) - words[::-1].index("is"):]
            correct += bool(tail) and tail[0] == str(p.answer)
    model.train()
    return correct / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=TINY_DIR)
    args = parser.parse_args()
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_config(tokenizer, args.hidden, args.layers))
    print(f"params {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M vocab {len(tokenizer)}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = 50
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / args.steps, 1.0)))
    )
    rng = random.Random(0)
    start = time.time()
    for step, (ids, labels, mask) in zip(range(args.steps), batches(tokenizer, rng, args.batch_size)):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f} {time.time() - start:.0f}s", flush=True)
    print(f"pretraining-format accuracy {accuracy(model, tokenizer):.3f}")
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
