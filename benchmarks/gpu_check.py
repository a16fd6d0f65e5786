"""One prepared GPU check (run by benchmarks/gpu_check.sh): prints one table.

On a ~100M-parameter random Llama in bf16: LoRA and full training steps per second,
FSDP2 with one process, vLLM (CUDA) evaluating 10 LoRA adapters against the hf
backend (samples/s), perplexity tokens/s against a raw batched forward, and how far
the saved PiSSA/MiLoRA checkpoints are from the trained model (bf16). ``--cpu-smoke``
runs the same code on a tiny model on a CPU (no vLLM) to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ROWS = []


def _rows(n: int) -> list[dict]:
    from overmem.data import synthetic

    return synthetic.generate(0, "test", 0, n, "reference")


def train_rate(model_dir: Path, out: Path, method: str, steps: int, extra: list[str] = (), torchrun: bool = False) -> float:
    """Optimizer steps per second of overmem train (logged tokens/s turned into steps/s)."""
    args = ["train", "--model", str(model_dir), "--data", "synthetic-math", "--out", str(out), "--method", method,
            "--epochs", "1", "--batch-size", "8", "--micro-batch-size", "8", "--max-len", "256", "--lr", "1e-4",
            "--train-size", str(8 * steps), "--eval-size", "8", "--log-every", "1", *extra]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "-m", "overmem_tui.cli"]
           if torchrun else [sys.executable, "-m", "overmem_tui.cli"]) + args
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-1500:])
    from overmem.rundir import load_run

    logs = load_run(out).train_logs
    times = [log.time for log in logs]
    if len(times) >= 3:  # steady state: from the second logged step on
        return (len(times) - 2) / (times[-1] - times[1])
    return steps / (time.perf_counter() - start)


def adapters(model_dir: Path, run: Path, count: int) -> None:
    """A run of ``count`` random r=16 LoRA checkpoints on the base (a multi-LoRA evaluation)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from overmem.rundir import CheckpointInfo, RunDir, RunInfo
    from overmem.training.setup import DataOptions, build_data

    data = build_data(DataOptions("synthetic-math", train_size=8, eval_size=64), seed=0)
    rd = RunDir(run)
    rd.create(RunInfo(status="finished", base_model={"id": str(model_dir), "path": str(model_dir)}, data=data,
                      hyperparameters={"max_len": 256}))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    for k in range(count):
        torch.manual_seed(k)
        peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                                init_lora_weights=False))
        with rd.stage_checkpoint(CheckpointInfo(f"ep{k + 1}", "adapter", epoch=float(k + 1), step=k + 1)) as f:
            peft.save_pretrained(str(f))
        model = peft.unload()


def eval_rate(run: Path, backend: str, rows: int) -> float:
    """Samples per second of greedy generation over every adapter (val split, 64 new tokens)."""
    metrics = run / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "overmem_tui.cli", "eval", str(run), "--backend", backend,
                           "--metrics", "acc", "--splits", "val", "--limit", str(rows), "--max-new-tokens", "64",
                           "--batch-size", "32"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-1500:])
    from overmem.rundir import load_run

    evaluated = sum(1 for c in load_run(run).checkpoints if c.kind != "base") + 1
    return evaluated * rows / (time.perf_counter() - start)


def ppl_rates(model_dir: Path, device: str) -> tuple[float, float]:
    import torch

    from benchmarks.common import timed
    from overmem.data.encoding import collate, encode
    from overmem.evaluation import perplexity
    from overmem.models.loading import load_model, load_tokenizer

    ref = {"id": str(model_dir), "path": str(model_dir), "gguf_file": None}
    model = load_model(ref, dtype=torch.bfloat16 if device != "cpu" else torch.float32, device=device).eval()
    tok = load_tokenizer(ref)
    enc = [encode(tok, r["query"], r["response"]) for r in _rows(256)]
    tokens = sum(len(e.input_ids) for e in enc)
    batches = perplexity.length_batches([len(e.input_ids) for e in enc], 32)
    tensors = [tuple(t.to(device) for t in collate([enc[i] for i in b], tok.pad_token_id, 16)) for b in batches]

    def raw():
        with torch.inference_mode():
            for ids, mask, _ in tensors:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
        if device != "cpu":
            torch.cuda.synchronize()

    t_ours, _ = timed(lambda: perplexity.score(model, enc, tok.pad_token_id, 32, device), 3)
    t_raw, _ = timed(raw, 3)
    return tokens / t_ours, tokens / t_raw


def reproduction_error(out: Path, method: str, precision: str) -> float:
    """||trained logits - saved checkpoint's logits|| / ||trained - base logits|| (bf16 on the GPU)."""
    import torch
    from peft import PeftModel

    from overmem.models.loading import load_model, resolve_base
    from overmem.training.setup import DataOptions, build_config
    from overmem.training.trainer import Training

    t = Training(build_config(model="tiny", data=DataOptions("synthetic-math", train_size=16, eval_size=4),
                              out=str(out), method=method, r=8, alpha=16, dropout=0.0, epochs=1, batch_size=8,
                              micro_batch_size=8, lr=2e-3, max_len=256, precision=precision))
    t.run()
    ids = torch.tensor([[1, 20, 30, 40, 50, 60, 70, 80]], device=t.dist.device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    with torch.no_grad():
        t.model.eval()
        live = t.model(input_ids=ids).logits.float()
        base = load_model(resolve_base("tiny"), dtype=dtype, device=t.dist.device)
        before = base(input_ids=ids).logits.float()
        saved = PeftModel.from_pretrained(base, str(out / "checkpoints" / "ep1"))(input_ids=ids).logits.float()
    return float((live - saved).norm() / (live - before).norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="a tiny model on the CPU, vLLM left out")
    args = parser.parse_args()
    import torch

    from benchmarks.common import params, random_llama
    from overmem.models.loading import load_model

    gpu = torch.cuda.is_available() and not args.cpu_smoke
    if not gpu and not args.cpu_smoke:
        sys.exit("gpu_check: no CUDA device here (use --cpu-smoke to check the script on a CPU)")
    device = "cuda" if gpu else "cpu"
    precision = "bf16" if gpu else "fp32"
    table = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        hidden, layers = (768, 12) if gpu else (64, 2)
        model_dir = random_llama(tmp / "m", hidden=hidden, layers=layers, vocab=32000 if gpu else 256)
        n = params(load_model({"id": str(model_dir), "path": str(model_dir)}))
        steps = 40 if gpu else 3
        table.append(("model", f"{n:.0f}M parameters, {precision}, {device}"))
        for method in ("lora", "full"):
            rate = train_rate(model_dir, tmp / f"train-{method}", method, steps, ["--precision", precision])
            table.append((f"train {method} (batch 8 x 256)", f"{rate:.2f} steps/s"))
        rate = train_rate(model_dir, tmp / "train-fsdp", "full", steps, ["--precision", precision, "--fsdp"],
                          torchrun=True)
        table.append(("train full, FSDP2 1 process", f"{rate:.2f} steps/s"))
        run = tmp / "adapters"
        adapters(model_dir, run, 10)
        rows = 64 if gpu else 4
        hf = eval_rate(run, "hf", rows)
        if gpu:
            vllm = eval_rate(run, "vllm", rows)
            table.append(("eval 10 LoRAs: vLLM / hf", f"{vllm:.1f} / {hf:.1f} samples/s = {vllm / hf:.1f}x"))
        else:
            table.append(("eval 10 LoRAs: hf", f"{hf:.1f} samples/s (vLLM on CUDA only)"))
        ours, raw = ppl_rates(model_dir, device)
        table.append(("perplexity vs raw forward", f"{ours:,.0f} / {raw:,.0f} tokens/s = {ours / raw:.2f}x"))
        for method in ("pissa", "milora"):
            err = reproduction_error(tmp / f"repro-{method}", method, precision)
            table.append((f"{method} saved vs trained ({precision})", f"{err:.2e} of the delta's effect"))
    width = max(len(k) for k, _ in table)
    print(json.dumps({k: v for k, v in table}) if os.environ.get("GPU_CHECK_JSON") else "")
    for key, value in table:
        print(f"| {key:<{width}} | {value} |")


if __name__ == "__main__":
    main()
