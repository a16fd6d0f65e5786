"""Finetuning methods behind a registry (the CLI's --method choices come from here).

Defaults follow the method's Table 6. PiSSA and MiLoRA start the adapter from the
principal (PiSSA) or minor (MiLoRA) singular components (B0, A0) of each target
weight W, and train W - s B0 A0 + s B A. overmem never writes that residual into the
base weight: rounded to bf16 it would lose much of the minor component and differ
from anything a checkpoint can carry. The base stays as loaded and a second, frozen
adapter holds -s B0 A0 (fp32, no dropout), so the trained model IS the original base
plus the rank-2r LoRA [B, -B0] @ [A; A0] that every checkpoint saves: PEFT, vLLM and
merging load it like any LoRA, and it reproduces the trained model to rounding.
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

    def validate(self) -> "MethodConfig":
        from overmem.errors import UsageError
        from overmem.params import require

        if self.name not in Method.registry:
            raise UsageError(f"unknown method {self.name!r} (methods: {', '.join(Method.registry)})")
        require("--rank", self.r, int, low=1, high=65536)
        require("--alpha", self.alpha, float, low=0, low_open=True)
        require("--dropout", self.dropout, float, low=0, high=1, high_open=True)
        for target in self.targets:
            require("--targets", target, str)
        return self


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
            r=self.r if r is None else r,
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


def get_finetuning_method(name: str) -> Method:
    from overmem.errors import UsageError

    try:
        return Method.registry[name]
    except KeyError:
        raise UsageError(f"unknown method {name!r} (methods: {', '.join(Method.registry)})") from None


def scale(cfg: MethodConfig) -> float:
    return cfg.alpha / (cfg.r**0.5) if cfg.use_rslora else cfg.alpha / cfg.r


INIT_ADAPTER = "overmem_init"  # the frozen adapter holding -s B0 A0 of PiSSA/MiLoRA


def apply_method(model, cfg: MethodConfig, initial: dict | None = None):
    """Wrap ``model`` for training with ``cfg``; returns the model to train.

    ``initial`` (adapter tensors by PEFT key, e.g. from RUN/init_adapter on resume)
    replaces the SVD of PiSSA/MiLoRA, so a resumed run starts from the same B0, A0.
    """
    method = get_finetuning_method(cfg.name)
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

    def lora(dropout: float) -> LoraConfig:
        return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=dropout, target_modules=list(cfg.targets),
                          use_rslora=cfg.use_rslora, init_lora_weights=True, task_type="CAUSAL_LM")

    peft_model = get_peft_model(model, lora(cfg.dropout))
    if method.svd_init:
        svd_init(peft_model, principal=method.init == "pissa", initial=initial)
        peft_model.add_adapter(INIT_ADAPTER, lora(0.0))
        _set_init_adapter(peft_model)
        peft_model.base_model.set_adapter(["default", INIT_ADAPTER])
        for name, param in peft_model.named_parameters():
            param.requires_grad_(".default." in name and "lora_" in name)
    return peft_model


def _lora_layers(peft_model, adapter: str = "default"):
    from peft.tuners.lora import LoraLayer

    for module in peft_model.modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            yield module


def svd_init(peft_model, *, principal: bool, initial: dict | None = None, adapter: str = "default") -> None:
    """A, B from the r principal (PiSSA) or minor (MiLoRA) singular components of each
    target weight, as float32 (sqrt of the singular values split between them, divided
    by the scale, as PEFT's PiSSA does). The base weight is left untouched."""
    import torch

    by_key = _keys(peft_model, adapter) if initial is not None else {}
    for module in _lora_layers(peft_model, adapter):
        if initial is not None:
            key_a, key_b = by_key[id(module)]
            lora_A, lora_B = initial[key_a].float(), initial[key_b].float()
        else:
            weight = module.get_base_layer().weight.data.to(torch.float32)
            r, s = module.r[adapter], module.scaling[adapter]
            U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
            pick = slice(0, r) if principal else slice(-r, None)
            root = torch.diag(torch.sqrt(S[pick] / s))
            lora_A, lora_B = root @ Vh[pick], U[:, pick] @ root
        module.lora_A[adapter].weight.data = lora_A.contiguous().to(torch.float32)
        module.lora_B[adapter].weight.data = lora_B.contiguous().to(torch.float32)


def milora_init(peft_model, adapter: str = "default") -> None:
    """MiLoRA's adapter from the r SMALLEST singular components (PEFT has no MiLoRA of its
    own; its "mica" freezes B and zeroes A). The base weight is left untouched."""
    svd_init(peft_model, principal=False, adapter=adapter)


def _keys(peft_model, adapter: str) -> dict:
    """id(LoraLayer) -> (PEFT state-dict key of lora_A, of lora_B) for ``adapter``."""
    layers = {id(m) for m in _lora_layers(peft_model, adapter)}
    return {id(module): (f"{name}.lora_A.weight", f"{name}.lora_B.weight")
            for name, module in peft_model.named_modules() if id(module) in layers}


def _set_init_adapter(peft_model) -> None:
    """The frozen second adapter: (A0, -B0) copied from the trainable one at its start."""
    for module in _lora_layers(peft_model, INIT_ADAPTER):
        module.lora_A[INIT_ADAPTER].weight.data = module.lora_A["default"].weight.data.clone()
        module.lora_B[INIT_ADAPTER].weight.data = -module.lora_B["default"].weight.data.clone()


def adapter_tensors(peft_model, state_dict: dict | None = None) -> dict:
    """The trainable adapter's lora_A/lora_B tensors under PEFT's saved key names (from
    ``state_dict``, the gathered one under FSDP, when given)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model, state_dict=state_dict, adapter_name="default")
    return {k: v.detach().cpu().clone() for k, v in state.items()}


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


def save_adapter(peft_model, cfg: MethodConfig, folder: Path, initial: dict | None,
                 state_dict: dict | None = None) -> None:
    """Save the adapter as PEFT would; PiSSA/MiLoRA converted to a LoRA on the original base.
    ``state_dict``: the model's full state, when it is sharded (FSDP)."""
    import json

    from safetensors.torch import save_file

    from overmem.rundir.checkpoint import ADAPTER_CONFIG

    peft_model.save_pretrained(str(folder), selected_adapters=["default"], state_dict=state_dict)
    if initial is None:
        return
    converted = converted_to_lora(adapter_tensors(peft_model, state_dict), initial)
    save_file({k: v.contiguous() for k, v in converted.items()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    config_path = folder / ADAPTER_CONFIG
    config = json.loads(config_path.read_text())
    r2 = 2 * cfg.r
    # keep the scale: alpha/r (or alpha/sqrt(r) with rsLoRA) must not change with the rank
    config.update(r=r2, lora_alpha=scale(cfg) * (r2**0.5 if cfg.use_rslora else r2), init_lora_weights=True)
    config_path.write_text(json.dumps(config, indent=2))


def trainable_state(model, state_dict: dict | None = None) -> dict:
    """Trainable parameters by name (what resume restores), from ``state_dict`` when sharded."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if state_dict is not None:
        return {n: state_dict[n].detach().cpu().clone() for n in names}
    params = dict(model.named_parameters())
    return {n: params[n].detach().cpu().clone() for n in names}


def describe(cfg: MethodConfig) -> str:
    if cfg.r is None:
        return cfg.name
    return f"{cfg.name} r={cfg.r} alpha={cfg.alpha:g} dropout={cfg.dropout:g} targets={','.join(cfg.targets)}"


__all__ = ["Method", "MethodConfig", "apply_method", "get_finetuning_method", "register", "save_adapter", "scale",
           "describe"]
