"""FSDP2 (``fully_shard``): parameters, gradients and optimizer state sharded over the processes.

Each decoder layer is its own unit and the whole model the root; with bf16 compute the
mixed-precision policy gathers parameters in bf16 and reduces gradients in fp32 while
the sharded master weights and AdamW state stay fp32. Checkpoints and resume state are
consolidated full state dicts: every process takes part in gathering them, the main
process writes them, so ``eval``, ``merge`` and vLLM read them as any other checkpoint.
"""

from __future__ import annotations


def decoder_layers(model):
    """The repeated blocks of a causal LM (under PEFT too), each sharded as one unit."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None:
        from overmem.errors import UsageError

        raise UsageError(f"--fsdp: cannot find the decoder layers of {type(base).__name__}")
    return list(layers)


def shard(model, compute_dtype) -> None:
    """fully_shard every decoder layer, then the model (in place)."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    low = compute_dtype if compute_dtype != torch.float32 else None
    policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
    for layer in decoder_layers(model):
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def set_gradient_sync(model, sync: bool) -> None:
    """Reduce gradients only on the last micro-batch of an accumulated step."""
    model.set_requires_gradient_sync(sync)


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def full_model_state(model) -> dict:
    """The whole model's state dict, gathered (a collective: every process calls it); the
    main process gets full CPU tensors."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def full_optimizer_state(model, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options())


def load_full_state(model, optimizer, model_state: dict, optimizer_state: dict) -> None:
    """Load full state dicts (every process reads the same files) into the sharded model."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, model_state, options=_options(strict=False))
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=_options())
