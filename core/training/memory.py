"""The memory plan of a training run per GPU, from the model's config.json alone (no weights).

Bytes per parameter, the way overmem trains:
- full finetuning: fp32 master weights (4) + fp32 gradients (4) + AdamW's two fp32
  moments (8) = 16; with FSDP (``--fsdp``) all of it is sharded over the GPUs, plus the
  bf16 copy of the largest layer gathered for compute;
- LoRA family: the frozen base in bf16 (2, not sharded by DDP) and the adapter at 16.
Activations, bf16, per token and decoder layer: about 8 hidden + 4 intermediate values
(attention through SDPA/flash: no sequence-squared term); with activation checkpointing
only each layer's input (1 hidden) is kept, plus one layer's full activations while it
is recomputed. The logits of the micro-batch in fp32 (the loss is taken in fp32) come
on top: with a 128K vocabulary they are often the largest single item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from overmem.errors import ModelError

GB = 1024**3
RESERVE_GB = 2.0  # CUDA context, allocator fragmentation, communication buffers


@dataclass(frozen=True)
class Shape:
    vocab: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool

    @classmethod
    def from_config(cls, cfg: dict) -> "Shape":
        text = cfg.get("text_config") or cfg
        try:
            hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
            return cls(vocab=int(text["vocab_size"]), hidden=hidden, layers=int(text["num_hidden_layers"]),
                       intermediate=int(text["intermediate_size"]), heads=heads,
                       kv_heads=int(text.get("num_key_value_heads") or heads),
                       head_dim=int(text.get("head_dim") or hidden // heads),
                       tied=bool(cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", False))))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"config.json lacks what a memory plan needs ({exc})") from exc

    def layer_params(self) -> int:
        q_o = 2 * self.hidden * self.heads * self.head_dim
        k_v = 2 * self.hidden * self.kv_heads * self.head_dim
        return q_o + k_v + 3 * self.hidden * self.intermediate + 2 * self.hidden

    def params(self) -> int:
        embed = self.vocab * self.hidden
        return embed * (1 if self.tied else 2) + self.layers * self.layer_params() + self.hidden

    def lora_params(self, r: int, targets: tuple[str, ...]) -> int:
        dims = {"q_proj": (self.hidden, self.heads * self.head_dim), "k_proj": (self.hidden, self.kv_heads * self.head_dim),
                "v_proj": (self.hidden, self.kv_heads * self.head_dim), "o_proj": (self.heads * self.head_dim, self.hidden),
                "gate_proj": (self.hidden, self.intermediate), "up_proj": (self.hidden, self.intermediate),
                "down_proj": (self.intermediate, self.hidden)}
        return self.layers * sum(r * (dims[t][0] + dims[t][1]) for t in targets if t in dims)


@dataclass(frozen=True)
class Setup:
    method: str  # full | adapter
    gpus: int = 1
    gpu_mem_gb: float = 80.0
    fsdp: bool = False
    checkpointing: bool = False
    micro_batch: int = 8
    seq_len: int = 1024
    lora_r: int = 64
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Plan:
    items: tuple[tuple[str, float], ...]  # (what, GB per GPU)
    setup: Setup
    params: int
    trainable: int

    @property
    def total_gb(self) -> float:
        return sum(gb for _, gb in self.items)

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.setup.gpu_mem_gb


def plan(shape: Shape, s: Setup) -> Plan:
    n = shape.params()
    shards = s.gpus if s.fsdp else 1
    tokens = s.micro_batch * s.seq_len
    if s.method == "full":
        trainable = n
        weights = 4 * n / shards + (2 * shape.layer_params() if s.fsdp else 0)  # + one gathered bf16 layer
    else:
        trainable = shape.lora_params(s.lora_r, s.lora_targets)
        weights = (2 * n) / shards + 4 * trainable / shards
    grads = 4 * trainable / shards
    optimizer = 8 * trainable / shards
    per_token_layer = 2 * (8 * shape.hidden + 4 * shape.intermediate)
    if s.checkpointing:
        activations = tokens * (2 * shape.hidden * shape.layers + per_token_layer)
    else:
        activations = tokens * per_token_layer * shape.layers
    logits = tokens * shape.vocab * 4 * 2  # fp32 logits and their gradient
    items = (("weights", weights / GB), ("gradients", grads / GB), ("optimizer state", optimizer / GB),
             ("activations", activations / GB), ("logits", logits / GB), ("reserve", RESERVE_GB))
    return Plan(items, s, n, trainable)


def read_shape(model_dir: str | Path) -> Shape:
    path = Path(model_dir) / "config.json"
    try:
        return Shape.from_config(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: {exc}") from exc


def cheapest_fix(shape: Shape, s: Setup) -> str | None:
    """The cheapest change that makes the plan fit, or None. Cheapest first: what costs
    compute only (activation checkpointing), what changes nothing of the update (a smaller
    micro-batch, with more accumulation), sharding over the GPUs already there (FSDP),
    more GPUs, and last another method (LoRA instead of full finetuning)."""
    from dataclasses import replace

    def micro_batches(base: Setup):
        mb = base.micro_batch
        while mb > 1:
            mb //= 2
            yield f"--micro-batch-size {mb}", replace(base, micro_batch=mb)

    tries: list[tuple[str, Setup]] = []
    ckpt = ("--gradient-checkpointing", replace(s, checkpointing=True))
    if not s.checkpointing:
        tries.append(ckpt)
    tries += list(micro_batches(s))
    if not s.checkpointing:
        tries += [(f"{ckpt[0]} {text}", setup) for text, setup in micro_batches(ckpt[1])]
    if s.gpus > 1 and not s.fsdp:
        sharded = replace(s, fsdp=True, checkpointing=True)
        tries += [("--fsdp --gradient-checkpointing", sharded)]
        tries += [(f"--fsdp --gradient-checkpointing {text}", setup) for text, setup in micro_batches(sharded)]
    for gpus in (2, 4, 8, 16, 32, 64):
        if gpus > s.gpus:
            tries.append((f"--fsdp --gradient-checkpointing on {gpus} GPUs",
                          replace(s, fsdp=True, checkpointing=True, gpus=gpus)))
    if s.method == "full":
        tries.append(("--method lora", replace(s, method="adapter")))
        tries.append(("--method lora --gradient-checkpointing", replace(s, method="adapter", checkpointing=True)))
    for text, candidate in tries:
        if plan(shape, candidate).fits:
            return text
    return None


def describe(p: Plan) -> list[str]:
    s = p.setup
    head = (f"memory plan per GPU: {p.params / 1e9:.2f}B parameters, {p.trainable / 1e9:.3g}B trainable "
            f"({'full finetuning' if s.method == 'full' else f'LoRA r{s.lora_r}'}), {s.gpus} GPU(s)"
            f"{' sharded with FSDP' if s.fsdp else ''}, micro-batch {s.micro_batch} x {s.seq_len} tokens, "
            f"activation checkpointing {'on' if s.checkpointing else 'off'}")
    lines = [head] + [f"  {what:<16} {gb:8.1f} GB" for what, gb in p.items]
    lines.append(f"  {'total':<16} {p.total_gb:8.1f} GB of {s.gpu_mem_gb:g} GB: {'fits' if p.fits else 'does NOT fit'}")
    return lines
