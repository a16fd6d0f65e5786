"""Finetuning methods behind a registry (the CLI's --method choices come from here).

Defaults follow the method's Table 6. PiSSA and MiLoRA move principal (PiSSA)
or minor (MiLoRA) singular components of each target weight into the adapter
and subtract them from the base weight. Their checkpoints are saved as plain
LoRA adapters of rank 2r on the ORIGINAL base, [B, -B0] @ [A; A0], whose delta
is exactly s(B A - B0 A0): PEFT and vLLM load them like any LoRA, and merging
needs nothing else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")
LORA_PLUS_TARGETS = LORA_TARGETS + ("o_proj", "gate_proj")


@dataclass(frozen=True)
class MethodConfig:
    """The adapter hyperparameters a run used (written into run.json)."""

    name: str
    r: int | None = None
    alpha: float | None = None
    dropout: float | None = None
    targets: tuple[str, ...] = ()
    use_rslora: bool = False

    def to_json(self) -> dict:
        out = asdict(self)
        out["targets"] = list(self.targets)
        return out


@dataclass(frozen=True)
class Method:
    name: str
    help: str
    kind: str  # "adapter" | "full"
    r: int | None = None
    alpha: float | None = None
    dropout: float | None = None
    targets: tuple[str, ...] = ()
    init: str | bool = True  # PEFT init_lora_weights, or "milora"
    registry: ClassVar[dict[str, "Method"]] = {}

    def config(self, r=None, alpha=None, dropout=None, targets=None, use_rslora=False) -> MethodConfig:
        if self.kind == "full":
            return MethodConfig(self.name)
        return MethodConfig(
            self.name,
            r=r or self.r,
            alpha=alpha if alpha is not None else self.alpha,
            dropout=dropout if dropout is not None else self.dropout,
            targets=tuple(targets) if targets else self.targets,
            use_rslora=use_rslora,
        )

    @property
    def svd_init(self) -> bool:
        return self.init in ("pissa", "milora")


def register(method: Method) -> Method:
    Method.registry[method.name] = method
    return method


register(Method("lora", "LoRA (r 64, alpha 128, dropout 0.05, q/k/v/up/down)", "adapter", 64, 128, 0.05,
                LORA_TARGETS))
register(Method("lora-plus", "LoRA with o_proj and gate_proj added: more trainable parameters "
                "(the paper's variant; not the LoRA+ optimizer)", "adapter", 64, 128, 0.05, LORA_PLUS_TARGETS))
register(Method("pissa", "PiSSA: adapter initialised from the principal singular components (alpha 64)",
                "adapter", 64, 64, 0.05, LORA_TARGETS, init="pissa"))
register(Method("milora", "MiLoRA: adapter initialised from the minor singular components (alpha 64)",
                "adapter", 64, 64, 0.05, LORA_TARGETS, init="milora"))
register(Method("full", "full finetuning: every weight", "full"))


def get_method(name: str) -> Method:
    from overmem.errors import UsageError

    try:
        return Method.registry[name]
    except KeyError:
        raise UsageError(f"unknown method {name!r} (methods: {', '.join(Method.registry)})") from None


def scale(cfg: MethodConfig) -> float:
    return cfg.alpha / (cfg.r**0.5) if cfg.use_rslora else cfg.alpha / cfg.r


def apply_method(model, cfg: MethodConfig):
    """Wrap ``model`` for training with ``cfg``; returns the model to train."""
    method = get_method(cfg.name)
    if method.kind == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    from overmem.errors import UsageError

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in cfg.targets if t not in present]
    if missing:
        raise UsageError(f"target modules {missing} are not in this model (it has e.g. {sorted(present)[:12]})")
    lora = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.targets),
        use_rslora=cfg.use_rslora,
        init_lora_weights="pissa" if method.init == "pissa" else True,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    if method.init == "milora":
        milora_init(peft_model)
    return peft_model


def milora_init(peft_model, adapter: str = "default") -> None:
    """MiLoRA: A, B from the r SMALLEST singular components; the base keeps the rest.

    Mirrors PEFT's PiSSA init (sqrt of the singular values split between A and B,
    divided by the scale, subtracted from the base weight) on the minor end of the
    spectrum. PEFT has no MiLoRA of its own (its "mica" freezes B and zeroes A).
    """
    import torch
    from peft.tuners.lora import LoraLayer

    for module in peft_model.modules():
        if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
            continue
        base = module.get_base_layer()
        weight = base.weight.data.to(torch.float32)
        r, s = module.r[adapter], module.scaling[adapter]
        U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
        Ur, Sr, Vhr = U[:, -r:], S[-r:] / s, Vh[-r:]
        root = torch.diag(torch.sqrt(Sr))
        lora_A, lora_B = root @ Vhr, Ur @ root
        module.lora_A[adapter].weight.data = lora_A.to(base.weight.dtype)
        module.lora_B[adapter].weight.data = lora_B.to(base.weight.dtype)
        base.weight.data = (weight - s * lora_B @ lora_A).to(base.weight.dtype)


def adapter_tensors(peft_model) -> dict:
    """The adapter's lora_A/lora_B tensors under PEFT's saved key names."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(peft_model).items()}


def converted_to_lora(current: dict, initial: dict) -> dict:
    """[B, -B0] @ [A; A0] per module: a rank-2r LoRA on the original base with delta s(BA - B0A0)."""
    import torch

    out = {}
    for key, value in current.items():
        if ".lora_A." in key:
            out[key] = torch.cat([value, initial[key]], dim=0)
        elif ".lora_B." in key:
            out[key] = torch.cat([value, -initial[key]], dim=1)
        else:
            out[key] = value
    return out


def save_adapter(peft_model, cfg: MethodConfig, folder: Path, initial: dict | None) -> None:
    """Save the adapter as PEFT would; PiSSA/MiLoRA converted to a LoRA on the original base."""
    import json

    from safetensors.torch import save_file

    peft_model.save_pretrained(str(folder))
    if initial is None:
        return
    converted = converted_to_lora(adapter_tensors(peft_model), initial)
    save_file({k: v.contiguous() for k, v in converted.items()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    r2 = 2 * cfg.r
    # keep the scale: alpha/r (or alpha/sqrt(r) with rsLoRA) must not change with the rank
    config.update(r=r2, lora_alpha=scale(cfg) * (r2**0.5 if cfg.use_rslora else r2), init_lora_weights=True)
    config_path.write_text(json.dumps(config, indent=2))


def trainable_state(model) -> dict:
    """Trainable parameters by name (what resume restores)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def describe(cfg: MethodConfig) -> str:
    if cfg.r is None:
        return cfg.name
    return f"{cfg.name} r={cfg.r} alpha={cfg.alpha:g} dropout={cfg.dropout:g} targets={','.join(cfg.targets)}"


__all__ = ["Method", "MethodConfig", "apply_method", "get_method", "register", "save_adapter", "scale",
           "describe"]
