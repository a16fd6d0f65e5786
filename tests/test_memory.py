"""The memory plan of train --dry-run against a hand computation for Llama-3.1-8B (config only)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from overmem.training.memory import GB, RESERVE_GB, Setup, cheapest_fix, plan, read_shape
from overmem_tui.cli import app
from tests.conftest import DATA

LLAMA = DATA / "llama-3.1-8b"


def test_parameter_count_of_llama_3_1_8b():
    shape = read_shape(LLAMA)
    embed = 128256 * 4096
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    assert shape.params() == 2 * embed + 32 * layer + 4096 == 8_030_261_248
    # LoRA at the method's defaults: r 64 on q, k, v, up, down of 32 layers
    lora = 32 * 64 * ((4096 + 4096) + 2 * (4096 + 1024) + (4096 + 14336) + (14336 + 4096))
    assert shape.lora_params(64, ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")) == lora


def test_full_finetuning_plan_equals_the_hand_computation():
    shape = read_shape(LLAMA)
    n = 8_030_261_248
    tokens = 4 * 1024
    per_token_layer = 2 * (8 * 4096 + 4 * 14336)
    full = plan(shape, Setup(method="full", gpus=1, gpu_mem_gb=80, micro_batch=4, seq_len=1024))
    expected = {"weights": 4 * n, "gradients": 4 * n, "optimizer state": 8 * n,
                "activations": tokens * per_token_layer * 32, "logits": tokens * 128256 * 8}
    got = dict(full.items)
    for what, value in expected.items():
        assert got[what] == pytest.approx(value / GB), what
    assert got["reserve"] == RESERVE_GB and not full.fits  # 16 bytes per parameter: ~120 GB before activations
    sharded = plan(shape, Setup(method="full", gpus=8, gpu_mem_gb=80, fsdp=True, checkpointing=True,
                                micro_batch=4, seq_len=1024))
    got = dict(sharded.items)
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    assert got["weights"] == pytest.approx((4 * n / 8 + 2 * layer) / GB)
    assert got["optimizer state"] == pytest.approx(8 * n / 8 / GB)
    assert got["activations"] == pytest.approx(tokens * (2 * 4096 * 32 + per_token_layer) / GB)
    assert sharded.fits


def test_dry_run_prints_the_plan_and_refuses_what_does_not_fit(tmp_path):
    runner = CliRunner()
    args = ["train", "--model", str(LLAMA), "--data", "synthetic-math", "--out", str(tmp_path / "run"),
            "--method", "full", "--dry-run", "--micro-batch-size", "4", "--max-len", "1024", "--gpu-mem", "80"]
    refused = runner.invoke(app, args + ["--gpus", "2"])
    assert refused.exit_code == 2
    assert "memory plan per GPU: 8.03B parameters" in refused.stdout and "does NOT fit" in refused.stdout
    line = refused.stderr.strip()
    # 16 bytes per parameter do not fit one 80 GB GPU; sharded over the two there are, with
    # checkpointing, they do (67.8 GB): cheaper than buying GPUs or changing the method
    assert line.count("\n") == 0 and "the cheapest change that fits: --fsdp --gradient-checkpointing" in line
    shape = read_shape(LLAMA)
    one = Setup(method="full", gpus=1, gpu_mem_gb=80, micro_batch=4, seq_len=1024)
    assert cheapest_fix(shape, one) == "--fsdp --gradient-checkpointing on 2 GPUs"
    assert cheapest_fix(shape, Setup(method="full", gpus=1, gpu_mem_gb=24, micro_batch=4, seq_len=1024)) \
        == "--fsdp --gradient-checkpointing on 8 GPUs"
    # LoRA with long sequences: the fp32 logits of a 128K vocabulary dominate (33.6 GB at 16 x 2048),
    # so checkpointing alone does not help and the micro-batch must shrink (to 1: 32.5 GB)
    small = Setup(method="adapter", gpus=1, gpu_mem_gb=40, micro_batch=16, seq_len=2048)
    assert dict(plan(shape, small).items)["logits"] == pytest.approx(16 * 2048 * 128256 * 8 / GB)
    assert cheapest_fix(shape, small) == "--micro-batch-size 1"
    fits = runner.invoke(app, args + ["--gpus", "8", "--fsdp", "--gradient-checkpointing"])
    assert fits.exit_code == 0 and "fits" in fits.stdout and not (tmp_path / "run").exists()
    lora = runner.invoke(app, args[:8] + ["lora", "--dry-run", "--gpus", "1", "--gpu-mem", "80",
                                          "--micro-batch-size", "4", "--max-len", "1024"])
    assert lora.exit_code == 0 and "LoRA r64" in lora.stdout
