"""Merging two full checkpoints of a ~0.5B-parameter random model: wall time vs copying
the same input files (target >= 0.5x copy speed), peak RSS (target <= 1.2x the largest
shard + a constant), mergekit's task_arithmetic on the same inputs (a dev dependency:
wall time, peak RSS and the largest difference between the two outputs), and the
adapter-form merge of two r=64 LoRA checkpoints vs the full-form merge.
Each merge runs in a fresh subprocess so its peak RSS is its own.
Run: .venv/bin/python benchmarks/merge.py [--hidden 1536 --layers 16]"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Peak memory from VmHWM: ru_maxrss survives exec and would report the parent's peak.
CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(2)
from overmem.merging.merge import plan_merge, run_merge

def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

start_kb = hwm_kb()
start = time.perf_counter()
run_merge(plan_merge({run!r}, {refs!r}, form={form!r}, out={out!r}, force=True, max_shard_bytes={shard}))
print(json.dumps({{"seconds": time.perf_counter() - start, "peak_kb": hwm_kb(), "start_kb": start_kb}}))
"""


MERGEKIT = r"""
import json, time, yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import MergeOptions, run_merge

def hwm_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

config = MergeConfiguration.model_validate(yaml.safe_load({config!r}))
start_kb = hwm_kb()
start = time.perf_counter()
run_merge(config, {out!r}, options=MergeOptions(device="cpu", copy_tokenizer=False, lazy_unpickle=True,
                                                 low_cpu_memory=True, out_shard_size={shard}))
print(json.dumps({{"seconds": time.perf_counter() - start, "peak_kb": hwm_kb(), "start_kb": start_kb}}))
"""


def mergekit_child(base: Path, inputs: list[Path], out: Path, shard: int) -> dict:
    """mergekit's task_arithmetic (theta_base + sum w_i delta_i, not normalized) in its own process."""
    config = "\n".join(["merge_method: task_arithmetic", f"base_model: {base}", "dtype: float32",
                        "parameters:", "  normalize: false", "models:"]
                       + [line for p in inputs for line in (f"  - model: {p}", "    parameters:", "      weight: 0.5")])
    code = MERGEKIT.format(config=config, out=str(out), shard=shard)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-1500:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def max_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    def tensors(folder):
        out = {}
        for f in folder.glob("*.safetensors"):
            out.update(load_file(str(f)))
        return out

    x, y = tensors(a), tensors(b)
    assert x.keys() == y.keys(), sorted(set(x) ^ set(y))[:4]
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


def child(run, refs, form, out, shard):
    code = CHILD.format(root=str(ROOT), run=str(run), refs=refs, form=form, out=str(out), shard=shard)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def build(tmp: Path, hidden: int, layers: int, shard: int):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from benchmarks.common import random_llama
    from overmem.rundir import CheckpointInfo, RunDir, RunInfo

    base = random_llama(tmp / "base", hidden=hidden, layers=layers, vocab=32000, inter=hidden * 3)
    model = AutoModelForCausalLM.from_pretrained(base)
    model.save_pretrained(base, max_shard_size=shard)  # sharded like real checkpoints
    n_params = sum(p.numel() for p in model.parameters())
    rd = RunDir(tmp / "run")
    rd.create(RunInfo(status="finished", base_model={"id": str(base), "path": str(base)}))
    for k, name in enumerate(("ep3", "ep10")):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 1e-3)
        with rd.stage_checkpoint(CheckpointInfo(name, "full", epoch=k + 1)) as folder:
            model.save_pretrained(folder, max_shard_size=shard)
    del model
    small = AutoModelForCausalLM.from_pretrained(base)
    for k, name in enumerate(("lora3", "lora10")):
        torch.manual_seed(k)
        peft = get_peft_model(small, LoraConfig(r=64, lora_alpha=128, init_lora_weights=False,
                                                target_modules=["q_proj", "k_proj", "v_proj", "up_proj",
                                                                "down_proj"]))
        with rd.stage_checkpoint(CheckpointInfo(name, "adapter", epoch=k + 3)) as folder:
            peft.save_pretrained(str(folder))
        small = peft.unload()
    return rd.path, n_params


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=16)
    args = ap.parse_args()
    shard_bytes = 500 * 1024**2
    with tempfile.TemporaryDirectory(dir=str(ROOT / "benchmarks")) as tmp_str:
        tmp = Path(tmp_str)
        run, n_params = build(tmp, args.hidden, args.layers, "500MB")
        inputs = [run / "checkpoints" / "ep3", run / "checkpoints" / "ep10"]
        size = sum(f.stat().st_size for d in inputs for f in d.glob("*.safetensors"))
        largest = max(f.stat().st_size for d in inputs for f in d.glob("*.safetensors"))
        start = time.perf_counter()
        for i, d in enumerate(inputs):
            shutil.copytree(d, tmp / f"copy{i}")
        t_copy = time.perf_counter() - start
        full = child(run, ["ep3", "ep10"], "full", tmp / "merged", shard_bytes)
        rss_mb = full["peak_kb"] / 1024
        print(f"model {n_params / 1e6:.0f}M params, inputs {size / 1e9:.2f} GB, largest shard {largest / 1e6:.0f} MB")
        print(f"full merge {full['seconds']:.1f}s vs copying the inputs {t_copy:.1f}s: "
              f"{t_copy / full['seconds']:.2f}x copy speed (target >= 0.5x)")
        print(f"peak RSS {rss_mb:.0f} MB (process start {full['start_kb'] / 1024:.0f} MB); "
              f"{(rss_mb - full['start_kb'] / 1024) / (largest / 1e6):.2f}x the largest shard above the start "
              f"(target <= 1.2x + a constant)")
        adapter = child(run, ["lora3", "lora10"], "adapter", tmp / "merged-adapter", shard_bytes)
        lora_full = child(run, ["lora3", "lora10"], "full", tmp / "merged-lora-full", shard_bytes)
        a_size = sum(f.stat().st_size for f in (tmp / "merged-adapter").iterdir())
        f_size = sum(f.stat().st_size for f in (tmp / "merged-lora-full").iterdir())
        print(f"two r=64 LoRAs: adapter form {adapter['seconds']:.1f}s, {a_size / 1e6:.0f} MB; full form "
              f"{lora_full['seconds']:.1f}s, {f_size / 1e6:.0f} MB ({lora_full['seconds'] / adapter['seconds']:.1f}x "
              f"slower, {f_size / a_size:.0f}x larger)")
        try:
            import mergekit  # noqa: F401
        except ImportError:
            print("mergekit not installed here (it is a dev dependency): side-by-side comparison skipped")
            return
        mk = mergekit_child(run.parent / "base", inputs, tmp / "mergekit", shard_bytes)
        mk_mb = mk["peak_kb"] / 1024
        print(f"mergekit 0.1.5 task_arithmetic: {mk['seconds']:.1f}s at {mk_mb:.0f} MB peak RSS; overmem "
              f"{full['seconds']:.1f}s at {rss_mb:.0f} MB: {mk['seconds'] / full['seconds']:.2f}x faster, "
              f"{mk_mb / rss_mb:.2f}x less memory; outputs differ by at most "
              f"{max_difference(tmp / 'merged', tmp / 'mergekit'):.2g}")


if __name__ == "__main__":
    main()
