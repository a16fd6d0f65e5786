"""Samples/s of the hf backend's batched greedy generation vs per-sample generate
(target >= 3x); vLLM vs hf on the same checkpoints, including the cost of evaluating
10 LoRA epochs with one base load vs reloading per checkpoint.
Run: .venv/bin/python benchmarks/eval_generate.py"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import timed  # noqa: E402
from overmem.data import synthetic  # noqa: E402
from overmem.data.encoding import encode_prompt  # noqa: E402
from overmem.evaluation.hf_generate import generate  # noqa: E402
from overmem.models.loading import load_model, load_tokenizer, resolve_base  # noqa: E402

N, NEW = 64, 48


def hf_batched_vs_single(model, tok, prompts):
    t_batch, _ = timed(lambda: generate(model, tok, prompts, NEW, batch_size=32), 2)
    t_single, _ = timed(lambda: [generate(model, tok, [p], NEW, batch_size=1) for p in prompts], 1)
    return len(prompts) / t_batch, len(prompts) / t_single


def lora_checkpoints(root: Path, base: dict, count: int) -> list:
    from peft import LoraConfig, get_peft_model

    from overmem.rundir import CheckpointInfo

    out = []
    for k in range(count):
        torch.manual_seed(k)
        model = get_peft_model(load_model(base), LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                                            target_modules=["q_proj", "v_proj"]))
        path = root / f"ep{k + 1}"
        model.save_pretrained(str(path))
        out.append(CheckpointInfo(f"ep{k + 1}", "adapter", epoch=k + 1, path=path))
    return out


def main() -> None:
    torch.set_num_threads(2)
    base = resolve_base("tiny")
    tok = load_tokenizer(base)
    model = load_model(base).eval()
    prompts = [encode_prompt(tok, r["query"]) for r in synthetic.generate(0, "test", 0, N, "reference")]
    batched, single = hf_batched_vs_single(model, tok, prompts)
    print(f"hf backend: batched {batched:.1f} samples/s, per-sample generate {single:.1f} samples/s, "
          f"ratio {batched / single:.2f}x (target >= 3x)")
    from overmem.evaluation import vllm_backend

    if not vllm_backend.available():
        print("vLLM not installed: vllm comparisons skipped")
        return
    from overmem.evaluation.hf_models import HFModels

    with tempfile.TemporaryDirectory() as tmp:
        ckpts = lora_checkpoints(Path(tmp), base, 10)
        models = HFModels(base, device="cpu", dtype=torch.float32)
        start = time.perf_counter()
        for c in ckpts:
            with models.use(c) as m:
                generate(m, tok, prompts, NEW, batch_size=32)
        t_hf = time.perf_counter() - start
        start = time.perf_counter()
        gen = vllm_backend.VllmGenerator(base, max_lora_rank=8, max_model_len=512)
        for c in ckpts:
            gen.generate(c, prompts, NEW, stop_token_ids=[tok.eos_token_id])
        t_one_load = time.perf_counter() - start
        gen.close()
        start = time.perf_counter()
        for c in ckpts[:3]:  # reloading the engine per checkpoint: 3 of them, then scaled to 10
            g = vllm_backend.VllmGenerator(base, max_lora_rank=8, max_model_len=512)
            g.generate(c, prompts, NEW, stop_token_ids=[tok.eos_token_id])
            g.close()
        t_reload = (time.perf_counter() - start) / 3 * 10
        n = len(prompts) * len(ckpts)
        print(f"10 LoRA epochs x {len(prompts)} prompts: hf {n / t_hf:.1f} samples/s ({t_hf:.1f}s); "
              f"vllm one base load {n / t_one_load:.1f} samples/s ({t_one_load:.1f}s); "
              f"vllm reload per checkpoint ~{t_reload:.1f}s (one load is {t_reload / t_one_load:.1f}x faster)")
        print("note: on CPU vLLM's engine start dominates; on a GPU its batching is where it pays")


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    main()
