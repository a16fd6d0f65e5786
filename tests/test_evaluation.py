"""The evaluation engine: exact perplexity, generation, idempotence, claims, follow, callback."""

from __future__ import annotations

import json
import os
import math
import statistics
import subprocess
import sys
import threading
import time

import pytest
import torch

from overmem.data.encoding import encode, encode_prompt
from overmem.evaluation import perplexity
from overmem.evaluation.runner import EvalOptions, Evaluator
from overmem.progress import Advanced, Started
from overmem.models.loading import load_model, load_tokenizer, resolve_base
from overmem.rundir import RunDir, load_run
from overmem.training.setup import DataOptions, build_config
from overmem.training.trainer import train
from tests.helpers import ROOT, read_jsonl, trainer_dataset


@pytest.fixture(scope="module")
def tiny():
    base = resolve_base("tiny")
    return load_model(base), load_tokenizer(base)


# trained_run (conftest.py): a private copy of the session's 2-epoch LoRA run on the tiny model,
# nothing evaluated yet (ep0 = the base, ep1, ep2; 6 rows per eval split)


ROWS = [
    {"query": "Tom has 4 apples . How many apples does Tom have now ?", "response": "Tom has 4 apples . #### 4"},
    {"query": "Mia has 3 pens .", "response": "So she holds 3 pens . That makes 3 . #### 3"},
    {"query": "Ben has 7 cards . He gives 2 away . How many cards does Ben have now ?",
     "response": "7 - 2 = 5 . #### 5"},
]


def test_perplexity_matches_a_straightforward_loop(tiny):
    model, tok = tiny
    encoded = [encode(tok, r["query"], r["response"]) for r in ROWS]
    got = perplexity.score(model, encoded, tok.pad_token_id, batch_size=2)
    model.eval()
    for e, s in zip(encoded, got):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0]
        logp = torch.log_softmax(logits.double(), -1)
        nll = -sum(logp[t - 1, e.input_ids[t]].item() for t in range(e.n_prompt, len(e.input_ids)))
        assert s.n_tokens == e.n_response
        assert s.nll_sum == pytest.approx(nll, abs=1e-5)
    ppls = [math.exp(s.nll_sum / s.n_tokens) for s in got]
    agg = perplexity.aggregates(got)
    assert agg["mean"] == pytest.approx(sum(ppls) / 3, rel=1e-9)
    assert agg["median"] == pytest.approx(statistics.median(ppls), rel=1e-9)
    tokens = sum(s.n_tokens for s in got)
    assert agg["token"] == pytest.approx(math.exp(sum(s.nll_sum for s in got) / tokens), rel=1e-9)


def test_batched_generation_equals_one_by_one(tiny):
    from overmem.evaluation.hf_generate import generate

    model, tok = tiny
    prompts = [encode_prompt(tok, r["query"]) for r in ROWS]
    batched = generate(model, tok, prompts, max_new_tokens=24, batch_size=3)
    single = [generate(model, tok, [p], max_new_tokens=24, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert all(len(g) <= 24 for g in batched)


def test_evaluator_covers_every_checkpoint_once(trained_run):
    events = []
    ev = Evaluator(trained_run, EvalOptions(backend="hf", max_new_tokens=48, limit=4), on_event=events.append)
    assert ev.evaluate_pending() == 3  # ep0 (the base), ep1, ep2
    run = load_run(trained_run, strict=True)
    keys = [(m.checkpoint, m.split, m.metric, m.aggregate) for m in run.metrics]
    assert len(keys) == len(set(keys)) == 3 * 3 * 4  # 3 ckpts x 3 splits x (3 ppl aggregates + acc)
    assert {m.n for m in run.metrics} == {4}
    rd = RunDir(trained_run)
    ppl_rows = rd.read_sidecar("ep1", "test", "ppl")
    assert [r["idx"] for r in ppl_rows] == [0, 1, 2, 3] and all(r["n_tokens"] > 0 for r in ppl_rows)
    gen_rows = rd.read_sidecar("ep1", "test", "gen")
    assert set(gen_rows[0]) == {"idx", "generation", "extracted", "gold", "correct"}
    split_rows = read_jsonl(trained_run / "samples" / "_splits" / "test.rows.jsonl")
    assert len(split_rows) == 6 and split_rows[0]["answer"] == gen_rows[0]["gold"]
    acc = {m.checkpoint: m.value for m in run.metrics if m.metric == "acc" and m.split == "test"}
    assert acc["ep0"] == 0.0  # the base never writes "####"
    # idempotent: nothing left; --force recomputes
    assert Evaluator(trained_run, EvalOptions(backend="hf", limit=4)).evaluate_pending() == 0
    forced = Evaluator(trained_run, EvalOptions(backend="hf", limit=4, checkpoints=("ep1",), force=True,
                                                metrics=("ppl",)))
    assert forced.evaluate_pending() == 1
    again = load_run(trained_run)
    assert sum(1 for m in again.metrics if m.checkpoint == "ep1" and m.metric == "ppl") == 3 * 3 * 2
    assert any(isinstance(e, Advanced) and e.part == "gen" for e in events)


def test_claims_keep_two_evaluators_apart(trained_run, tmp_path):
    import shutil

    work = tmp_path / "run"
    shutil.copytree(trained_run, work, ignore=shutil.ignore_patterns("metrics.jsonl", "samples"))
    rd = RunDir(work)
    held = rd.try_claim("ep1")  # another live evaluator (this process) holds ep1
    assert held
    ev = Evaluator(work, EvalOptions(backend="hf", limit=2, max_new_tokens=8, metrics=("ppl",)))
    assert ev.evaluate_pending() == 2
    assert {m.checkpoint for m in load_run(work).metrics} == {"ep0", "ep2"}
    held.release()
    # two evaluator processes at once: each checkpoint evaluated exactly once
    procs = [subprocess.Popen([sys.executable, "-m", "overmem_tui.cli", "eval", str(work), "--backend", "hf",
                               "--limit", "2", "--max-new-tokens", "8", "--metrics", "ppl"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
    keys = [(m.checkpoint, m.split, m.aggregate) for m in load_run(work).metrics]
    assert len(keys) == len(set(keys)) == 3 * 3 * 3
    assert rd.claimed() == []


def test_an_evaluator_whose_claim_is_taken_over_drops_its_results(trained_run, tmp_path):
    """A second evaluator takes ep1 over (--steal-claims) while the first works on it: the first
    writes none of its ep1 results (records or samples), the second's appear exactly once."""
    import shutil

    from overmem.progress import Note, Started

    work = tmp_path / "run"
    shutil.copytree(trained_run, work, ignore=shutil.ignore_patterns("metrics.jsonl", "samples"))
    rd = RunDir(work)
    taken = {}

    def take_over(event):
        # the first evaluator holds ep1 and starts on it: another steals the claim and finishes ep1
        if isinstance(event, Started) and event.subject == "ep1" and not taken:
            assert rd.claimed() == ["ep1"]
            other = Evaluator(work, EvalOptions(backend="hf", limit=3, checkpoints=("ep1",), metrics=("ppl",),
                                                steal_claims=True))
            taken["count"] = other.evaluate_pending()
            taken["records"] = [m for m in load_run(work).metrics if m.checkpoint == "ep1"]
            taken["samples"] = {s: rd.read_sidecar("ep1", s, "ppl") for s in ("train", "val", "test")}

    events = []
    first = Evaluator(work, EvalOptions(backend="hf", limit=2, metrics=("ppl",)),
                      on_event=lambda e: (events.append(e), take_over(e)))
    assert first.evaluate_pending() == 2  # ep0 and ep2; ep1's results were dropped
    assert taken["count"] == 1 and len(taken["records"]) == 3 * 3  # 3 splits x 3 ppl aggregates
    assert {m.n for m in taken["records"]} == {3}  # the second evaluator's (limit 3)
    assert any(isinstance(e, Note) and e.subject == "ep1" and "taken over" in e.text for e in events)
    run = load_run(work, strict=True)
    assert [m for m in run.metrics if m.checkpoint == "ep1"] == taken["records"]  # nothing of the first's
    keys = [(m.checkpoint, m.split, m.metric, m.aggregate) for m in run.metrics]
    assert len(keys) == len(set(keys)) == 3 * 3 * 3
    assert {m.n for m in run.metrics if m.checkpoint != "ep1"} == {2}
    for split, rows in taken["samples"].items():
        assert [r["idx"] for r in rows] == [0, 1, 2]
    # the evaluator that lost ep1 leaves the new holder's per-sample files as they were
    for split, rows in taken["samples"].items():
        assert rd.read_sidecar("ep1", split, "ppl") == rows, split
    assert rd.claimed() == []


def _write_claim(rd, checkpoint, *, host, pid, age):
    """A claim file as an evaluator leaves it, its heartbeat (and file time) ``age`` seconds old."""
    path = rd.claim_path(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    beat = time.time() - age
    path.write_text(json.dumps({"host": host, "pid": pid, "token": f"token-{checkpoint}", "heartbeat": beat}))
    os.utime(path, (beat, beat))
    return path


def test_cli_takes_over_stale_claims_and_leaves_fresh_ones(trained_run, tmp_path):
    """`overmem eval`: a claim of a dead process on this host is taken at once; one 60 s old from
    another host only with --claim-timeout below 60; a fresh one of a live evaluator only with
    --steal-claims. In the end every (checkpoint, split, metric) record is there exactly once."""
    import shutil
    import socket

    from typer.testing import CliRunner

    from overmem_tui.cli import app

    work = tmp_path / "run"
    shutil.copytree(trained_run, work, ignore=shutil.ignore_patterns("metrics.jsonl", "samples"))
    rd = RunDir(work)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        _write_claim(rd, "ep0", host=socket.gethostname(), pid=dead.pid, age=1)  # its evaluator died here
        remote = _write_claim(rd, "ep1", host="another-host.invalid", pid=live.pid, age=60)
        fresh = _write_claim(rd, "ep2", host=socket.gethostname(), pid=live.pid, age=1)
        remote_text, fresh_text = remote.read_bytes(), fresh.read_bytes()
        runner = CliRunner()
        common = ["eval", str(work), "--backend", "hf", "--limit", "2", "--max-new-tokens", "8"]

        def evaluated():
            return [(m.checkpoint, m.split, m.metric, m.aggregate) for m in load_run(work, strict=True).metrics]

        r = runner.invoke(app, common)
        assert r.exit_code == 0, r.output + (r.stderr or "")
        assert "evaluated 1 checkpoint(s)" in r.output
        assert "ep1: claimed by another evaluator" in r.output and "ep2: claimed by another evaluator" in r.output
        assert {k[0] for k in evaluated()} == {"ep0"}
        assert remote.read_bytes() == remote_text and fresh.read_bytes() == fresh_text  # left alone
        assert rd.claimed() == ["ep1", "ep2"]

        fresh = _write_claim(rd, "ep2", host=socket.gethostname(), pid=live.pid, age=1)  # fresh again, however
        fresh_text = fresh.read_bytes()  # long the first evaluation took
        r = runner.invoke(app, [*common, "--claim-timeout", "30"])
        assert r.exit_code == 0, r.output + (r.stderr or "")
        assert "evaluated 1 checkpoint(s)" in r.output and "ep2: claimed by another evaluator" in r.output
        assert {k[0] for k in evaluated()} == {"ep0", "ep1"}
        assert fresh.read_bytes() == fresh_text and rd.claimed() == ["ep2"]

        r = runner.invoke(app, [*common, "--steal-claims"])
        assert r.exit_code == 0, r.output + (r.stderr or "")
        assert "evaluated 1 checkpoint(s)" in r.output
        assert rd.claimed() == []
    finally:
        live.kill()
        live.wait()
    keys = evaluated()
    assert len(keys) == len(set(keys)) == 3 * 3 * 4  # 3 checkpoints x 3 splits x (3 ppl aggregates + acc)
    assert set(keys) == {(c, s, "ppl", a) for c in ("ep0", "ep1", "ep2") for s in ("train", "val", "test")
                         for a in ("mean", "median", "token")} | {
        (c, s, "acc", "mean") for c in ("ep0", "ep1", "ep2") for s in ("train", "val", "test")}


def test_module_entry_evaluates_what_is_left_and_respects_claims(trained_run, tmp_path):
    """``python -m overmem.evaluation`` (the demo's second evaluator) skips a claimed checkpoint."""
    import shutil

    work = tmp_path / "run"
    shutil.copytree(trained_run, work, ignore=shutil.ignore_patterns("metrics.jsonl", "samples"))
    rd = RunDir(work)
    assert rd.try_claim("ep1")
    options = {"backend": "hf", "limit": 2, "max_new_tokens": 8, "metrics": ["ppl"], "splits": ["val", "test"]}
    done = subprocess.run([sys.executable, "-m", "overmem.evaluation", str(work), json.dumps(options)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    keys = {(m.checkpoint, m.split) for m in load_run(work).metrics if m.aggregate == "mean"}
    assert keys == {(c, s) for c in ("ep0", "ep2") for s in ("val", "test")}
    assert rd.claimed() == ["ep1"]  # only ours is left


def test_claim_is_released_on_failure(trained_run, tmp_path, monkeypatch):
    import shutil

    work = tmp_path / "run"
    shutil.copytree(trained_run, work, ignore=shutil.ignore_patterns("metrics.jsonl", "samples"))
    ev = Evaluator(work, EvalOptions(backend="hf", limit=2, checkpoints=("ep1",), metrics=("ppl",)))

    def boom(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(perplexity, "score", boom)
    with pytest.raises(RuntimeError):
        ev.evaluate_pending()
    assert not (work / "claims" / "ep1.json").exists()


def test_follow_evaluates_a_concurrently_writing_trainer(tmp_path):
    out = tmp_path / "live"
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "from overmem.training.setup import DataOptions, build_config\n"
        "from overmem.training.trainer import train\n"
        "train(build_config(model='tiny', data=DataOptions('synthetic-math', train_size=16, eval_size=4), out=%r,"
        " method='lora', r=8, alpha=16, epochs=3, batch_size=8, micro_batch_size=8, lr=2e-3, max_len=256))\n"
    ) % (str(ROOT), str(out))
    trainer = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "run.json").exists():
        assert time.time() < deadline and trainer.poll() is None, trainer.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    seen = []
    ev = Evaluator(out, EvalOptions(backend="hf", limit=3, max_new_tokens=8),
                   on_event=lambda e: isinstance(e, Started) and seen.append(e.subject))
    done = ev.follow(interval=0.2)
    assert trainer.wait(timeout=300) == 0
    assert done == 4 and seen == ["ep0", "ep1", "ep2", "ep3"]  # in order, each once
    run = load_run(out, strict=True)
    assert run.status == "finished"
    keys = [(m.checkpoint, m.split, m.metric, m.aggregate) for m in run.metrics]
    assert len(keys) == len(set(keys)) == 4 * 3 * 4


def test_train_eval_flag_evaluates_in_process(tmp_path):
    from overmem.evaluation.inprocess import EvaluateAfterCheckpoint

    out = tmp_path / "run"
    cfg = build_config(model="tiny", data=DataOptions("synthetic-math", train_size=8, eval_size=3), out=str(out),
                       method="lora", r=8, alpha=16, epochs=1, batch_size=8, micro_batch_size=8, max_len=256,
                       eval_options={"max_new_tokens": 8})
    train(cfg, after_checkpoint=EvaluateAfterCheckpoint())
    run = load_run(out)
    assert {m.checkpoint for m in run.metrics} == {"ep0", "ep1"}
    # the in-process numbers equal a fresh evaluation from disk
    fresh = tmp_path / "fresh"
    import shutil

    shutil.copytree(out, fresh, ignore=shutil.ignore_patterns("metrics.jsonl", "samples"))
    Evaluator(fresh, EvalOptions(backend="hf", max_new_tokens=8)).evaluate_pending()
    a = {(m.checkpoint, m.split, m.metric, m.aggregate): m.value for m in run.metrics}
    b = {(m.checkpoint, m.split, m.metric, m.aggregate): m.value for m in load_run(fresh).metrics}
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-4), k


def test_eval_cli_errors(trained_run):
    from typer.testing import CliRunner

    from overmem_tui.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["eval", str(trained_run), "--splits", "gsm8k"])
    assert r.exit_code == 2 and "not defined for this run" in r.stderr
    r = runner.invoke(app, ["eval", str(trained_run), "--backend", "tpu"])
    assert r.exit_code == 2 and "--backend must be one of" in r.stderr
    r = runner.invoke(app, ["eval", str(trained_run), "--checkpoints", "ep9"])
    assert r.exit_code == 2 and "no checkpoint(s) ep9" in r.stderr
    r = runner.invoke(app, ["eval", str(trained_run), "--limit", "0"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1


def test_overmem_callback_on_a_real_trainer(tmp_path, toy_llama):
    """OvermemCallback turns a plain transformers.Trainer run into an overmem run directory."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from overmem.callback import OvermemCallback
    from overmem.models.loading import resolve_base

    base = resolve_base("tiny")
    tok = load_tokenizer(base)
    rows = [{"query": r["query"], "response": r["response"]} for r in ROWS]
    ds = trainer_dataset(tok, rows * 4)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base["path"]),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    out = tmp_path / "overmem-run"
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), num_train_epochs=2, per_device_train_batch_size=4,
                             learning_rate=1e-3, save_strategy="epoch", eval_strategy="epoch", logging_steps=1,
                             report_to="none", use_cpu=True, disable_tqdm=True)
    cb = OvermemCallback(out, tokenizer=tok, splits={"val": rows, "test": rows[:2]}, max_new_tokens=8)
    Trainer(model=model, args=args, train_dataset=ds, eval_dataset=ds, callbacks=[cb]).train()
    run = load_run(out, strict=True)
    assert run.status == "finished"
    assert [c.name for c in run.checkpoints] == ["ep0", "ep1", "ep2"]
    assert (run.checkpoint("ep2").path / "adapter_model.safetensors").is_file()
    assert not (run.checkpoint("ep2").path / "optimizer.pt").exists()
    assert run.train_logs and run.train_logs[0].lr > 0
    ours = {(m.checkpoint, m.split, m.metric, m.aggregate) for m in run.metrics}
    assert ("ep1", "val", "ppl", "mean") in ours and ("ep2", "test", "acc", "mean") in ours
    assert ("ep1", "val", "ppl", "token") in ours  # the Trainer's own eval_loss
    # and `overmem eval` can continue on it (ep0, the base, is still missing)
    assert Evaluator(out, EvalOptions(backend="hf", splits=("val",), max_new_tokens=8)).evaluate_pending() == 1


def _tiny_arch(name: str, vocab: int):
    """A tiny random model of an architecture that changes its logits inside forward."""
    import transformers

    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256)
    configs = {
        "granite": lambda: transformers.GraniteConfig(**common, logits_scaling=8.0),
        "cohere": lambda: transformers.CohereConfig(**common, logit_scale=0.0625),
        "cohere2": lambda: transformers.Cohere2Config(**common, logit_scale=0.0625, sliding_window=64),
        "llama": lambda: transformers.LlamaConfig(**common),
    }
    torch.manual_seed(0)
    model_cls = {"granite": transformers.GraniteForCausalLM, "cohere": transformers.CohereForCausalLM,
                 "cohere2": transformers.Cohere2ForCausalLM, "llama": transformers.LlamaForCausalLM}[name]
    return model_cls(configs[name]()).eval()


@pytest.mark.parametrize("arch,fast", [("granite", False), ("cohere", False), ("cohere2", False), ("llama", True)])
def test_perplexity_equals_the_models_own_logits_on_every_architecture(tiny, arch, fast):
    """Granite divides its logits and Cohere scales them inside forward: the fast path (LM head
    on response positions only) would be wrong there, so it is verified on the first batch."""
    _, tok = tiny
    model = _tiny_arch(arch, len(tok))
    encoded = [encode(tok, r["query"], r["response"]) for r in ROWS]
    notes = []
    got = perplexity.score(model, encoded, tok.pad_token_id, batch_size=2, on_note=notes.append)
    for e, s in zip(encoded, got):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0]
        logp = torch.log_softmax(logits.double(), -1)
        nll = -sum(logp[t - 1, e.input_ids[t]].item() for t in range(e.n_prompt, len(e.input_ids)))
        assert s.nll_sum == pytest.approx(nll, rel=1e-5, abs=1e-5)
    assert bool(notes) is not fast  # the note names the fallback; Llama keeps the fast path
    ids, mask, labels = perplexity.collate(encoded, tok.pad_token_id)
    with torch.no_grad():
        fast_sums, counts = perplexity.head_nll(model, ids, mask, labels)
        full_sums, _ = perplexity.full_nll(model, ids, mask, labels)
    assert perplexity.agree(fast_sums, full_sums, counts, False) is fast  # the check can tell them apart


def test_evaluation_beside_training_on_its_own_devices(monkeypatch):
    """eval --device cuda:1 hides the other GPUs from this process before torch or vLLM start;
    vLLM's memory share and tensor parallelism reach the engine on CUDA."""
    from overmem.errors import UsageError
    from overmem.evaluation import vllm_backend
    from overmem_tui.commands.evaluate import _claim_devices

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _claim_devices("cuda:1") == "cuda:0" and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert _claim_devices("cuda:2,3") == "cuda:0" and os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert _claim_devices("cpu") == "cpu" and _claim_devices(None) is None
    with pytest.raises(UsageError):
        _claim_devices("gpu1")
    monkeypatch.setattr(vllm_backend, "available", lambda: True)
    gen = vllm_backend.VllmGenerator({"id": "m", "path": None}, gpu_memory_utilization=0.3, tensor_parallel_size=2)
    monkeypatch.setattr(vllm_backend, "_cuda", lambda: True)
    kwargs = gen.engine_kwargs("m", lora=True)
    assert kwargs["gpu_memory_utilization"] == 0.3 and kwargs["tensor_parallel_size"] == 2
    assert kwargs["enable_lora"] and "distributed_executor_backend" not in kwargs
    monkeypatch.setattr(vllm_backend, "_cuda", lambda: False)
    assert gen.engine_kwargs("m", lora=False)["distributed_executor_backend"] == "uni"
