"""End-to-end probes on the tiny model, with the hf and vllm backends."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from overmem.evaluation.runner import EvalOptions, Evaluator
from overmem.probes.compare import probe_json, probe_rows
from overmem.probes.runner import PREAMBLES, ProbeOptions, ProbeRunner, resolve_checkpoints, token_scores
from overmem.rundir import RunDir, load_run
from overmem.training.setup import DataOptions, build_config
from overmem.training.trainer import train
from overmem_tui.cli import app


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "run"
    train(build_config(model="tiny", data=DataOptions("synthetic-math", train_size=16, eval_size=6), out=str(out),
                       method="lora", r=8, alpha=16, epochs=2, batch_size=8, micro_batch_size=8, lr=3e-3,
                       max_len=256))
    Evaluator(out, EvalOptions(backend="hf", max_new_tokens=48)).evaluate_pending()
    return out


def test_min_k_plus_plus_token_scores_against_loops():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 6)
    targets = torch.tensor([[2, -100, 5, 0]])
    tok_lp, plus, valid = token_scores(logits, targets)
    for t in (0, 2, 3):
        probs = torch.softmax(logits[0, t].double(), -1)
        logs = probs.log()
        mu = sum(probs[z] * logs[z] for z in range(6))
        var = sum(probs[z] * logs[z] ** 2 for z in range(6)) - mu**2
        y = targets[0, t]
        assert tok_lp[0, t].item() == pytest.approx(logs[y].item(), abs=1e-5)
        assert plus[0, t].item() == pytest.approx(((logs[y] - mu) / var.sqrt()).item(), abs=1e-4)
    assert valid.tolist() == [[True, False, True, True]]


def _reward_model(path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from overmem.models.loading import load_tokenizer, resolve_base

    tok = load_tokenizer(resolve_base("tiny"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, head_dim=32, num_labels=1,
                      pad_token_id=tok.pad_token_id)
    LlamaForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def check_metrics(run, names, n):
    obj = probe_json(run, names)
    for name in names:
        r = obj[name]["robustness"]
        assert set(r) >= {"acc_plain", "drop_avg"} | {f"acc_preamble{i + 1}" for i in range(len(PREAMBLES))}
        assert r["drop_avg"] == pytest.approx(r["acc_plain"] - sum(r[f"acc_preamble{i + 1}"] for i in range(4)) / 4)
        d = obj[name]["diversity"]
        passes = [d[f"pass@{k}"] for k in range(1, n + 1)]
        assert passes == sorted(passes) and all(0 <= p <= 1 for p in passes)
        assert 0 < d["ead"] and 0 < d["distinct1"] <= 1 and "semantic_diversity" in d
        c = obj[name]["calibration"]
        assert 0 <= c["ece"] <= 1 and 0 < c["mean_confidence"] <= 1
    return obj


def test_probes_end_to_end_hf(probed_run, tmp_path):
    ood = tmp_path / "ood.jsonl"
    from overmem.data import synthetic

    ood.write_text("".join(json.dumps(r) + "\n" for r in synthetic.generate(3, "ood", 0, 4, "reference")))
    options = ProbeOptions(backend="hf", n_samples=3, limit=4, mia_size=8, max_new_tokens=40,
                           ood={"extra": str(ood)}, reward_model=str(_reward_model(tmp_path / "rm")))
    runner = ProbeRunner(probed_run, options)
    assert resolve_checkpoints(runner.run, ["latest"]) == ["ep2"]
    runner.run_probes(["ep1", "ep2"])
    run = load_run(probed_run, strict=True)
    obj = check_metrics(run, ["ep1", "ep2"], 3)
    for name in ("ep1", "ep2"):
        mia = obj[name]["mia"]
        for score in ("loss", "zlib", "mink", "minkpp"):
            assert 0 <= mia[f"auroc_{score}"] <= 1 and 0 <= mia[f"tpr@5%fpr_{score}"] <= 1
        assert 0 <= obj[name]["ood"]["acc_avg"] <= 1 and "acc_extra" in obj[name]["ood"]
        assert 0 <= obj[name]["diversity"]["best_of_3"] <= 1
    rd = RunDir(probed_run)
    side = rd.read_sidecar("ep1", "mia", "probe-mia")
    assert {s["score"] for s in side} == {"loss", "zlib", "mink", "minkpp"} and len(side[0]["members"]) == 8
    rows = probe_rows(run, ["ep1", "ep2"])
    ece = next(r for r in rows if r.metric == "ece")
    assert ece.better == "lower" and ece.best() in ("ep1", "ep2", None)


def test_recommended_and_latest_resolve_from_the_run():
    from tests.conftest import DATA

    run = load_run(DATA / "paper_run")
    assert resolve_checkpoints(run, ["recommended", "latest"]) == ["ep5", "ep10"]


def test_probe_cli_json_and_errors(probed_run):
    runner = CliRunner()
    result = runner.invoke(app, ["probe", str(probed_run), "--checkpoints", "ep1", "--probes", "robustness",
                                 "--limit", "2", "--max-new-tokens", "16", "--backend", "hf", "--json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["checkpoints"] == ["ep1"] and "robustness" in obj["probes"]["ep1"]
    for metric, value in obj["probes"]["ep1"]["robustness"].items():  # every number with its interval
        low, high = obj["probe_intervals"]["ep1"]["robustness"][metric]
        assert low - 1e-9 <= value <= high + 1e-9, metric
    bad = runner.invoke(app, ["probe", str(probed_run), "--probes", "vibes"])
    assert bad.exit_code == 2 and "unknown probe(s) vibes" in bad.stderr
    bad = runner.invoke(app, ["probe", str(probed_run), "--checkpoints", "ep9"])
    assert bad.exit_code == 2 and "no checkpoint 'ep9'" in bad.stderr


@pytest.mark.vllm
@pytest.mark.slow
def test_probes_with_vllm(probed_run):
    from overmem.evaluation import vllm_backend

    if not vllm_backend.available():
        pytest.skip("vLLM is not installed")
    options = ProbeOptions(backend="vllm", probes=("robustness", "diversity", "calibration"), n_samples=4, limit=4,
                           max_new_tokens=40)
    ProbeRunner(probed_run, options).run_probes(["ep2"])
    check_metrics(load_run(probed_run), ["ep2"], 4)
