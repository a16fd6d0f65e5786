"""The training engine on the shipped tiny model: methods, losses, schedule, checkpoints, resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from overmem.rundir import load_run
from overmem.training.losses import mar_loss, sft_loss, token_nll
from overmem.training.finetuning import Method
from overmem.training.setup import DataOptions, build_config
from overmem.training.schedule import effective_warmup, lr_factor
from overmem.training.trainer import train
from tests.helpers import ROOT


def tiny_cfg(out, method="lora", **kw):
    params = dict(epochs=2, batch_size=8, micro_batch_size=4, max_len=256, lr=1e-3, r=8, alpha=16, seed=0)
    params.update(kw)
    data = DataOptions("synthetic-math", train_size=params.pop("train_size", 16), eval_size=8)
    return build_config(model="tiny", data=data, out=str(out), method=method, **params)


def test_schedule_and_warmup_clipping():
    assert effective_warmup(100, 10_000) == 100
    assert effective_warmup(100, 50) == 5
    assert [lr_factor("linear", s, 2, 10) for s in (0, 1, 2, 6, 10)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert lr_factor("constant", 7, 2, 10) == 1.0
    assert lr_factor("cosine", 6, 2, 10) == pytest.approx(0.5)


def test_mar_is_ce_weighted_by_one_minus_p_without_gradient_through_p():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.tensor([[-100, -100, 3, 1, 2], [-100, 4, 0, -100, -100]])
    nll, mask = token_nll(logits, labels)
    # independent computation
    logp = torch.log_softmax(logits[:, :-1], -1)
    tgt = labels[:, 1:]
    manual = [(-logp[b, t, tgt[b, t]]) for b in range(2) for t in range(4) if tgt[b, t] != -100]
    assert sft_loss(logits, labels).item() == pytest.approx(sum(x.item() for x in manual), rel=1e-6)
    weights = [1 - math.exp(-x.item()) for x in manual]
    assert mar_loss(logits, labels).item() == pytest.approx(sum(w * x.item() for w, x in zip(weights, manual)), rel=1e-6)
    # gradient: d/dlogits of sum_t w_t * CE_t with w_t constant
    (g_mar,) = torch.autograd.grad(mar_loss(logits, labels), logits)
    const = sum(w * x for w, x in zip(weights, manual))
    (g_ref,) = torch.autograd.grad(const, logits)
    assert torch.allclose(g_mar, g_ref, atol=1e-6)
    assert mask.sum() == len(manual)


def _first_batch_losses(run) -> dict[str, float]:
    """SFT and MAR losses of the run's first batch (here: every training row) under the base model,
    computed row by row without padding: sum over response tokens / number of response tokens."""
    from overmem.data.encoding import encode
    from overmem.data.loaders import SplitSpec, select
    from overmem.models.loading import load_model, load_tokenizer

    tok = load_tokenizer(run.info.base_model)
    model = load_model(run.info.base_model, dtype=torch.float32).eval()
    rows = select(SplitSpec.from_json(run.info.data["fit"]))
    sums, count = {"sft": 0.0, "mar": 0.0}, 0
    for row in rows:
        e = encode(tok, row["query"], row["response"], run.info.prompt_template, 256)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([e.input_ids])).logits[0].double(), -1)
        for t in range(e.n_prompt, len(e.input_ids)):
            ce = -logp[t - 1, e.input_ids[t]].item()
            sums["sft"] += ce
            sums["mar"] += (1.0 - math.exp(-ce)) * ce  # (1 - p(y_t)) x CE_t
            count += 1
    assert len(rows) == 8 and count > len(rows)
    return {k: v / count for k, v in sums.items()}


def test_first_logged_loss_is_the_losses_formula_on_the_first_batch(tmp_path):
    """One step over all 8 rows (two micro-batches): the logged loss is the loss of the initial model
    (the base: LoRA starts with B = 0) on that batch, the token-mean of CE for SFT and of
    (1 - p) x CE for MAR; the two differ."""
    logged = {}
    for loss in ("sft", "mar"):
        out = tmp_path / loss
        train(tiny_cfg(out, "lora", loss=loss, epochs=1, train_size=8, batch_size=8, micro_batch_size=4,
                       log_every=1))
        run = load_run(out, strict=True)
        assert run.info.loss == loss and [log.step for log in run.train_logs] == [1]
        logged[loss] = run.train_logs[0].loss
    expected = _first_batch_losses(run)
    assert logged["sft"] == pytest.approx(expected["sft"], rel=1e-5)
    assert logged["mar"] == pytest.approx(expected["mar"], rel=1e-5)
    assert expected["mar"] < expected["sft"] and abs(logged["mar"] - logged["sft"]) > 1e-3 * logged["sft"]


# every method with SFT; MAR (independent of the method) with an adapter and with full finetuning
COMBINATIONS = [(m, "sft") for m in Method.registry] + [("lora", "mar"), ("full", "mar")]


@pytest.mark.parametrize("method,loss", COMBINATIONS)
def test_every_method_and_loss_trains_end_to_end(tmp_path, method, loss):
    out = tmp_path / "run"
    train(tiny_cfg(out, method, loss=loss))
    run = load_run(out, strict=True)
    assert run.status == "finished"
    assert [c.name for c in run.checkpoints] == ["ep0", "ep1", "ep2"]
    assert run.info.method["name"] == method and run.info.loss == loss
    assert run.info.hyperparameters["effective_warmup_steps"] == 0  # 4 steps: clipped from 100
    assert any("warmup clipped" in n for n in run.info.notes)
    logs = run.train_logs
    assert logs[-1].step == 4 and all(math.isfinite(l.loss) for l in logs)
    ep2 = run.checkpoint("ep2")
    assert (ep2.epoch, ep2.step) == (2.0, 4)
    if method == "full":
        from transformers import AutoModelForCausalLM

        assert ep2.kind == "full"
        AutoModelForCausalLM.from_pretrained(ep2.path)
    else:
        cfg = json.loads((ep2.path / "adapter_config.json").read_text())
        assert ep2.kind == "adapter"
        expected_r = 16 if method in ("pissa", "milora") else 8
        assert cfg["r"] == expected_r and cfg["lora_alpha"] / cfg["r"] == pytest.approx(2.0)
        targets = set(cfg["target_modules"])
        assert ("o_proj" in targets) == (method == "lora-plus")
    assert (out / "state" / "trainable.safetensors").is_file()


def _live_vs_saved_logits(tmp_path, method):
    """Logits of the trained in-memory model vs its saved checkpoint loaded on the ORIGINAL base."""
    from peft import PeftModel

    from overmem.models.loading import load_model, resolve_base
    from overmem.training.trainer import Training

    out = tmp_path / method
    t = Training(tiny_cfg(out, method, epochs=1, dropout=0.0))
    t.run()
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    t.model.eval()
    with torch.no_grad():
        live = t.model(input_ids=ids).logits
        base = load_model(resolve_base("tiny"))
        saved = PeftModel.from_pretrained(base, str(out / "checkpoints" / "ep1"))(input_ids=ids).logits
    return live, saved, out


@pytest.mark.parametrize("method", ["pissa", "milora"])
def test_svd_methods_save_an_exact_lora_on_the_original_base(tmp_path, method):
    live, saved, out = _live_vs_saved_logits(tmp_path, method)
    assert torch.allclose(live, saved, atol=1e-4), (live - saved).abs().max()
    assert (out / "init_adapter" / "adapter_model.safetensors").is_file()
    info = json.loads((out / "checkpoints" / "ep1" / "checkpoint.json").read_text())
    assert info["extra"]["converted_from"] == method and info["extra"]["init_adapter"] == "init_adapter"


def test_milora_takes_the_minor_singular_components():
    from peft import LoraConfig, get_peft_model

    from overmem.models.loading import load_model, resolve_base
    from overmem.training.finetuning import milora_init

    base = load_model(resolve_base("tiny"), dtype=torch.bfloat16)
    w = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    milora_init(model)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert A.dtype == B.dtype == torch.float32  # trainable factors stay fp32 on a bf16 base
    assert torch.equal(layer.base_layer.weight, w)  # the base is never rewritten (no bf16 residual)
    s = layer.scaling["default"]
    sv = torch.linalg.svdvals(w.float())
    assert torch.allclose(torch.linalg.svdvals(s * B @ A)[:4], sv[-4:], atol=1e-4)


@pytest.mark.parametrize("method", ["lora", "pissa", "milora"])
def test_bf16_checkpoints_reproduce_the_trained_model(tmp_path, method):
    """In bf16 (the GPU default) the saved adapter on the original base is the trained model:
    before, a bf16 residual W - s B0 A0 made the saved MiLoRA checkpoint differ by 48% of the
    delta's effect on the logits (PiSSA 2.8%).

    Compared in float64, where the same weights give the same logits on any CPU: the live
    model (base + trained adapter + frozen -s B0 A0) and the checkpoint agree to rounding. In
    bf16 the two compute differently (the live model adds two adapter outputs in turn, a
    cancellation), and how much depends on the CPU's bf16 kernels (AMD's avx512_bf16 and one
    thread: 1.3% of the effect); that difference stays within the bf16 error of the live
    model itself, measured against the float64 computation."""
    import copy

    from peft import PeftModel

    from overmem.models.loading import load_model, resolve_base
    from overmem.training.trainer import Training

    out = tmp_path / method
    t = Training(tiny_cfg(out, method, epochs=1, dropout=0.0, precision="bf16", lr=2e-3))
    t.run()
    trainable = [p for p in t.model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    ids = torch.tensor([[1, 20, 30, 40, 50, 60, 70, 80], [1, 33, 7, 61, 12, 5, 90, 44]])
    t.model.eval()
    checkpoint = str(out / "checkpoints" / "ep1")
    with torch.no_grad():
        live = t.model(input_ids=ids).logits.double()
        live64 = copy.deepcopy(t.model).to(torch.float64)(input_ids=ids).logits
        base = load_model(resolve_base("tiny"), dtype=torch.bfloat16)
        before = load_model(resolve_base("tiny"), dtype=torch.bfloat16).to(torch.float64)(input_ids=ids).logits
        saved = PeftModel.from_pretrained(base, checkpoint)(input_ids=ids).logits.double()
        base64 = load_model(resolve_base("tiny"), dtype=torch.bfloat16).to(torch.float64)  # the same bf16 weights
        saved64 = PeftModel.from_pretrained(base64, checkpoint).to(torch.float64)(input_ids=ids).logits
    effect = (live64 - before).norm()
    assert effect > 0.1  # training moved the model
    assert (live64 - saved64).norm() <= 1e-9 * effect, float((live64 - saved64).norm() / effect)
    bf16_error = (live - live64).norm()  # what bf16 arithmetic costs the live model itself
    assert (live - saved).norm() <= bf16_error, (float((live - saved).norm() / effect), float(bf16_error / effect))


KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tests.test_training import tiny_cfg
from overmem.training.trainer import train
def kill(step):
    if step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
train(tiny_cfg({out!r}, "lora", epochs=3, train_size=24, dropout=0.1), on_step=kill)
"""


def _trainable(out):
    from safetensors.torch import load_file

    return load_file(str(out / "state" / "trainable.safetensors"))


def test_resume_after_a_kill_reaches_the_uninterrupted_result(tmp_path):
    straight = tmp_path / "straight"
    train(tiny_cfg(straight, "lora", epochs=3, train_size=24, dropout=0.1))
    killed = tmp_path / "killed"
    # 3 steps per epoch: step 5 is in the middle of epoch 2, after ep1 was saved
    proc = subprocess.run([sys.executable, "-c", KILLER.format(root=str(ROOT), kill_at=5, out=str(killed))],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    run = load_run(killed)
    assert run.status == "running" and [c.name for c in run.checkpoints] == ["ep0", "ep1"]
    from overmem.rundir import RunDir
    from overmem.training.config import TrainConfig

    cfg = TrainConfig.from_run(RunDir(killed).read_info(), str(killed))
    train(cfg, resume=True)
    assert load_run(killed).status == "finished"
    a, b = _trainable(straight), _trainable(killed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [l.step for l in load_run(killed).train_logs]
    assert steps[-1] == 9


def test_save_every_steps_writes_step_checkpoints(tmp_path):
    out = tmp_path / "run"
    train(tiny_cfg(out, "lora", epochs=2, train_size=24, save_every="2"))
    names = [c.name for c in load_run(out).checkpoints]
    assert names == ["ep0", "step2", "ep1", "step4", "ep2"]


def test_two_processes_match_one(tmp_path):
    """Data parallelism under torchrun (gloo, 2 CPU processes) computes the same updates."""
    one = tmp_path / "one"
    train(tiny_cfg(one, "lora", epochs=1, train_size=16, dropout=0.0, micro_batch_size=2))
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",  # a free port
         "-m", "overmem_tui.cli", "train", "--model", "tiny", "--data", "synthetic-math", "--out", str(two),
         "--epochs", "1", "--batch-size", "8", "--micro-batch-size", "2", "--max-len", "256", "--lr", "1e-3",
         "--rank", "8", "--alpha", "16", "--dropout", "0", "--train-size", "16", "--eval-size", "8"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = load_run(two, strict=True)
    assert run.status == "finished" and run.info.hyperparameters["world_size"] == 2
    a, b = _trainable(one), _trainable(two)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert [l.loss for l in load_run(one).train_logs] == pytest.approx([l.loss for l in run.train_logs], rel=1e-4)


@pytest.mark.parametrize("method", ["full", "lora", "pissa"])
def test_gradient_checkpointing_gives_the_same_gradients(tmp_path, method):
    """Activation checkpointing only trades memory for compute: the gradients of one batch,
    dropout included (its RNG state is replayed in the recomputation), are the same."""
    from overmem.training.distributed import init_dist
    from overmem.training.trainer import Training

    grads = []
    for checkpointing in (False, True):
        t = Training(tiny_cfg(tmp_path / str(checkpointing), method, dropout=0.1,
                              gradient_checkpointing=checkpointing))
        t.dist = init_dist()
        t._setup()
        base = t.model.get_base_model() if hasattr(t.model, "get_base_model") else t.model
        assert base.is_gradient_checkpointing is checkpointing
        t.model.train()
        torch.manual_seed(0)
        t._forward_backward(t.model, list(range(8)))
        grads.append({n: p.grad.detach().clone() for n, p in t.model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-6, rtol=1e-5), name
    assert any(g.abs().sum() > 0 for g in grads[0].values())


FSDP_KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tests.test_training import tiny_cfg
from overmem.training.trainer import train
def kill(step):
    if step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
train(tiny_cfg({out!r}, {method!r}, epochs=2, train_size=16, dropout=0.0, micro_batch_size=2, fsdp=True,
               precision="fp32"), on_step=kill)
"""


def _torchrun(args: list[str], timeout: float = 600):
    """2 processes under torchrun; --standalone: a free port of its own, never one another job holds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                           *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_fsdp_on_two_processes_matches_one_process(tmp_path, method):
    """FSDP2 over 2 gloo processes: the same weights (1e-5, float32) and losses as 1 process
    without sharding; its checkpoints load as any other; a killed run resumes to the same weights."""
    one = tmp_path / "one"
    train(tiny_cfg(one, method, epochs=2, train_size=16, dropout=0.0, micro_batch_size=2, precision="fp32"))
    two = tmp_path / "two"
    proc = _torchrun(["-m", "overmem_tui.cli", "train", "--model", "tiny", "--data", "synthetic-math", "--out",
                      str(two), "--method", method, "--epochs", "2", "--batch-size", "8", "--micro-batch-size", "2",
                      "--max-len", "256", "--lr", "1e-3", "--rank", "8", "--alpha", "16", "--dropout", "0",
                      "--train-size", "16", "--eval-size", "8", "--fsdp", "--precision", "fp32"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = load_run(two, strict=True)
    assert run.status == "finished" and run.info.hyperparameters["fsdp"] is True
    a, b = _trainable(one), _trainable(two)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert [l.loss for l in load_run(one).train_logs] == pytest.approx([l.loss for l in run.train_logs], rel=1e-4)
    # the consolidated checkpoint is an ordinary one: the same logits as the unsharded run's
    from overmem.evaluation.hf_models import HFModels

    models = HFModels(run.info.base_model, device="cpu")
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    logits = []
    for path in (one, two):
        ckpt = load_run(path).checkpoint("ep2")
        with models.use(ckpt) as model, torch.no_grad():
            logits.append(model(input_ids=ids).logits)
    assert torch.allclose(logits[0], logits[1], atol=1e-4)
    # resume after a kill in the middle of epoch 2 (2 steps per epoch: step 3)
    killed = tmp_path / "killed"
    script = tmp_path / "killer.py"
    script.write_text(FSDP_KILLER.format(root=str(ROOT), kill_at=3, out=str(killed), method=method))
    proc = _torchrun([str(script)])
    assert proc.returncode != 0 and [c.name for c in load_run(killed).checkpoints] == ["ep0", "ep1"]
    proc = _torchrun(["-m", "overmem_tui.cli", "train", "--resume", "--out", str(killed)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = _trainable(killed)
    for key in b:
        assert torch.equal(b[key], c[key]), key


def test_fsdp_in_one_process_leaves_no_group_and_no_environment(tmp_path, monkeypatch):
    """--fsdp outside torchrun starts a process group of one on an in-memory store and
    closes it: nothing is written to os.environ (a vLLM engine started later in the same
    process reads RANK/WORLD_SIZE/MASTER_PORT), and a group the caller started survives."""
    import torch.distributed as dist

    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    out = tmp_path / "one"
    train(tiny_cfg(out, "lora", epochs=1, train_size=8, dropout=0.0, micro_batch_size=4, fsdp=True, precision="fp32"))
    assert load_run(out).status == "finished"
    assert not dist.is_initialized()
    assert not {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"} & set(os.environ)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        train(tiny_cfg(tmp_path / "two", "lora", epochs=1, train_size=8, dropout=0.0, micro_batch_size=4,
                       fsdp=True, precision="fp32"))
        assert dist.is_initialized()  # the caller's group is the caller's to close
    finally:
        dist.destroy_process_group()
