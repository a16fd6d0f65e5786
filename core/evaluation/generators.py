"""Generation backends behind one protocol, chosen in one place for eval and probe alike.

``choose_generator`` picks vLLM when asked for (or, with ``auto``, when it is
installed and can serve the run) and the Hugging Face backend otherwise. Both cut
every output at the run's stop markers and end-of-turn tokens the same way
(``trim``), so greedy answers and sampled confidences agree across backends.
"""

from __future__ import annotations

from typing import Callable, Protocol

from overmem.errors import UsageError
from overmem.rundir.records import CheckpointInfo

BACKENDS = ("auto", "hf", "vllm")

Sample = tuple[list[int], list[float] | None]  # token ids and, when asked, their log-probabilities


class Generator(Protocol):
    name: str

    def serves(self, ckpt: CheckpointInfo) -> str | None:
        """None when this backend can generate with ``ckpt``, else why not."""

    def greedy(self, ckpt: CheckpointInfo, prompts: list[list[int]], max_new_tokens: int, *, model=None,
               progress: Callable[[int], None] | None = None,
               until: tuple[str, ...] | None = None) -> list[list[int]]:
        """One greedy continuation per prompt (token ids), trimmed at the run's stop markers; with
        ``until`` (lm-eval's stop strings) generation stops at those instead and the ids are kept
        whole up to the end-of-sequence token, for the caller to cut the text as it defines."""

    def sample(self, ckpt: CheckpointInfo, prompts: list[list[int]], n: int, temperature: float,
               max_new_tokens: int, seed: int, *, model=None) -> list[list[Sample]]:
        """``n`` sampled continuations per prompt with their log-probabilities (trimmed)."""

    def close(self) -> None: ...


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """End-of-sequence and end-of-turn ids: the tokenizer's and the model's generation config's."""
    ids = [tokenizer.eos_token_id]
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None) if config is not None else None
    ids += extra if isinstance(extra, list) else [extra]
    return list(dict.fromkeys(i for i in ids if i is not None))


def trim(tokenizer, ids: list[int], logps: list[float] | None, stops: tuple[str, ...], eos: list[int]):
    """Cut a continuation after its first end-of-turn token, or before the token that
    completes a stop marker, keeping log-probabilities aligned."""
    for k, token in enumerate(ids):
        if token in eos:
            ids, logps = ids[: k + 1], (logps[: k + 1] if logps is not None else None)
            break
    if stops:
        for k in range(1, len(ids) + 1):
            if any(s in tokenizer.decode(ids[:k], skip_special_tokens=True) for s in stops):
                ids, logps = ids[: k - 1], (logps[: k - 1] if logps is not None else None)
                break
    return ids, logps


def text_of(tokenizer, ids: list[int], stops: tuple[str, ...] = ()) -> str:
    """The visible text of a continuation, cut at the first stop marker."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for stop in stops:
        at = text.find(stop)
        if at >= 0:
            text = text[:at]
    return text.strip()


class HFGenerator:
    """transformers' generate on the model of each checkpoint (held by ``models``)."""

    name = "hf"

    def __init__(self, models, batch_size: int, stops: tuple[str, ...]) -> None:
        self.models = models
        self.batch_size = batch_size
        self.stops = stops

    def serves(self, ckpt: CheckpointInfo) -> str | None:
        return None

    def greedy(self, ckpt, prompts, max_new_tokens, *, model=None, progress=None, until=None):
        from overmem.evaluation.hf_generate import generate

        tok = self.models.tokenizer
        eos = stop_token_ids(tok, model)
        stops = self.stops if until is None else tuple(until)
        outs = generate(model, tok, prompts, max_new_tokens, self.batch_size, self.models.device, stops,
                        eos, progress)
        return [trim(tok, ids, None, self.stops if until is None else (), eos)[0] for ids in outs]

    def sample(self, ckpt, prompts, n, temperature, max_new_tokens, seed, *, model=None):
        from overmem.evaluation.hf_generate import sample

        tok = self.models.tokenizer
        eos = stop_token_ids(tok, model)
        outs = sample(model, tok, prompts, n, temperature, max_new_tokens, self.models.device, seed, self.stops,
                      eos)
        return [[trim(tok, ids, lps, self.stops, eos) for ids, lps in row] for row in outs]

    def close(self) -> None:
        return None


class VllmBackend:
    """vLLM: one engine per base, every LoRA checkpoint a LoRARequest (vllm_backend.py)."""

    name = "vllm"
    label = "vLLM"  # as people write it, in messages

    def __init__(self, engine, tokenizer, stops: tuple[str, ...]) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.stops = stops

    def serves(self, ckpt: CheckpointInfo) -> str | None:
        from overmem.evaluation.vllm_backend import unservable_reason
        from overmem.rundir.checkpoint import FORMAT_ADAPTER, checkpoint_format

        if not ckpt.is_base and checkpoint_format(ckpt) == FORMAT_ADAPTER:
            return unservable_reason(ckpt.path)
        return None

    def _eos(self) -> list[int]:
        return stop_token_ids(self.tokenizer)

    def greedy(self, ckpt, prompts, max_new_tokens, *, model=None, progress=None, until=None):
        eos = self._eos()
        stops = self.stops if until is None else tuple(until)
        outs = self.engine.generate(ckpt, prompts, max_new_tokens, stop=list(stops), stop_token_ids=eos)
        if progress:
            progress(len(prompts))
        return [trim(self.tokenizer, o[0][0], None, self.stops if until is None else (), eos)[0] for o in outs]

    def sample(self, ckpt, prompts, n, temperature, max_new_tokens, seed, *, model=None):
        eos = self._eos()
        outs = self.engine.generate(ckpt, prompts, max_new_tokens, n=n, temperature=temperature, top_p=1.0,
                                    stop=list(self.stops), stop_token_ids=eos, logprobs=True, seed=seed)
        return [[trim(self.tokenizer, ids, lps, self.stops, eos) for ids, lps in row] for row in outs]

    def close(self) -> None:
        self.engine.close()


def choose_generator(backend: str, base: dict, models, *, checkpoints=(), max_len: int = 2048,
                     max_new_tokens: int = 256, batch_size: int = 16, stops: tuple[str, ...] = (),
                     seed: int = 0, **vllm_options) -> Generator:
    """The generator for ``backend`` (auto | hf | vllm). ``auto`` takes vLLM when it is
    installed and the base is not GGUF and the model is not a live in-memory one."""
    from overmem.evaluation import vllm_backend

    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}")
    use_vllm = backend == "vllm" or (backend == "auto" and vllm_backend.available()
                                      and not base.get("gguf_file") and not getattr(models, "live", False))
    if not use_vllm:
        return HFGenerator(models, batch_size, stops)
    from overmem.rundir.checkpoint import adapter_ranks

    engine = vllm_backend.VllmGenerator(base, max_lora_rank=vllm_backend.lora_rank_limit(adapter_ranks(checkpoints)),
                                        max_model_len=max_len + max_new_tokens, seed=seed, **vllm_options)
    return VllmBackend(engine, models.tokenizer, stops)
