"""Shared helpers for the benchmark scripts (figures are ratios against a baseline run in the same process)."""

from __future__ import annotations

import time
from pathlib import Path


def timed(fn, repeat: int = 3):
    """Best wall time of ``repeat`` calls (and the last result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def random_llama(path: Path, hidden: int, layers: int, vocab: int = 32000, inter: int | None = None, seed: int = 0):
    """A random Llama of a given size saved with safetensors (a stand-in for real weights)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from overmem.models.loading import load_tokenizer, resolve_base

    tok = load_tokenizer(resolve_base("tiny"))
    cfg = LlamaConfig(vocab_size=max(vocab, len(tok)), hidden_size=hidden, intermediate_size=inter or hidden * 4,
                      num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                      num_key_value_heads=max(1, hidden // 64), head_dim=64 if hidden >= 64 else 32,
                      max_position_embeddings=1024, tie_word_embeddings=False, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def params(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6
