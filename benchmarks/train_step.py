"""MAR vs SFT step time on the same batch (target <= 1.05x) and overmem's training loop vs a
plain transformers.Trainer on the same model and data (target: not slower).
Run: .venv/bin/python benchmarks/train_step.py"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import timed  # noqa: E402
from overmem.data.encoding import collate, encode  # noqa: E402
from overmem.data.loaders import SplitSpec, select  # noqa: E402
from overmem.models.loading import load_model, load_tokenizer, resolve_base  # noqa: E402
from overmem.training.losses import mar_loss, sft_loss  # noqa: E402
from overmem.training.setup import DataOptions, build_config  # noqa: E402
from overmem.training.trainer import train  # noqa: E402


def step_time(model, batch, loss_fn, repeat=20):
    ids, mask, labels = batch
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        for _ in range(repeat):
            loss_fn(model(input_ids=ids, attention_mask=mask).logits, labels).backward()
            opt.step()
            opt.zero_grad()

    return timed(step, 3)[0] / repeat


def main() -> None:
    torch.set_num_threads(1)
    base = resolve_base("tiny")
    tok = load_tokenizer(base)
    model = load_model(base)
    rows = select(SplitSpec.from_json(build_config(model="tiny", data=DataOptions("synthetic-math", train_size=64,
                                                                                   eval_size=8), out="/tmp/x")
                                      .data["fit"]))
    enc = [encode(tok, r["query"], r["response"]) for r in rows]
    batch = collate(enc[:16], tok.pad_token_id, 16)
    step_time(model, batch, sft_loss, 3)  # warm up
    sft, mar = step_time(model, batch, sft_loss), step_time(model, batch, mar_loss)
    print(f"step time: sft {sft * 1000:.1f} ms, mar {mar * 1000:.1f} ms, ratio {mar / sft:.3f}x (target <= 1.05x)")

    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config(model="tiny", data=DataOptions("synthetic-math", train_size=64, eval_size=8),
                           out=f"{tmp}/ours", method="full", epochs=3, batch_size=8, micro_batch_size=8, lr=1e-4,
                           max_len=256, warmup_steps=0, schedule="linear")
        start = time.perf_counter()
        train(cfg)
        t_ours = time.perf_counter() - start
        t_trainer = plain_trainer(tmp, enc)
        print(f"3 epochs, 64 examples, full finetuning: overmem {t_ours:.2f}s, transformers.Trainer {t_trainer:.2f}s, "
              f"ratio {t_trainer / t_ours:.2f}x (target >= 1.0: not slower; both save a checkpoint per epoch)")


def plain_trainer(tmp: str, enc) -> float:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    width = max(len(e.input_ids) for e in enc)
    width = -(-width // 16) * 16
    pad = 0
    ds = Dataset.from_dict({
        "input_ids": [list(e.input_ids) + [pad] * (width - len(e.input_ids)) for e in enc],
        "attention_mask": [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in enc],
        "labels": [[-100] * e.n_prompt + list(e.input_ids[e.n_prompt:]) + [-100] * (width - len(e.input_ids))
                   for e in enc],
    })
    model = load_model(resolve_base("tiny"))
    args = TrainingArguments(output_dir=f"{tmp}/trainer", num_train_epochs=3, per_device_train_batch_size=8,
                             learning_rate=1e-4, save_strategy="epoch", report_to="none", use_cpu=True,
                             disable_tqdm=True, logging_steps=5, lr_scheduler_type="linear", warmup_steps=0)
    start = time.perf_counter()
    Trainer(model=model, args=args, train_dataset=ds).train()
    elapsed = time.perf_counter() - start
    shutil.rmtree(f"{tmp}/trainer", ignore_errors=True)
    return elapsed


if __name__ == "__main__":
    main()
