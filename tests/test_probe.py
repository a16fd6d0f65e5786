"""End-to-end probes on the tiny model, with the hf and vllm backends."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from overmem.evaluation.runner import EvalOptions, Evaluator
from overmem.probes.compare import probe_json, probe_rows
from overmem.probes.mia import token_scores
from overmem.probes.robustness import PREAMBLES
from tests.helpers import tiny_reward_model
from overmem.probes.runner import ProbeOptions, ProbeRunner
from overmem.selection import resolve_checkpoints
from overmem.rundir import RunDir, load_run
from overmem.training.setup import DataOptions, build_config
from overmem.training.trainer import train
from overmem_tui.cli import app

CI_LOW, CI_HIGH = "ci95_low", "ci95_high"  # aggregates of a probe number's 95% bootstrap interval


EPOCHS = 8
LATEST = f"ep{EPOCHS}"


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
    """A run that memorizes: 8 training rows, 32 steps at a high learning rate (its last checkpoint
    answers its training rows; the base, ep0, has never seen them)."""
    out = tmp_path_factory.mktemp("probe") / "run"
    train(build_config(model="tiny", data=DataOptions("synthetic-math", train_size=8, eval_size=8), out=str(out),
                       method="lora", r=8, alpha=16, epochs=EPOCHS, batch_size=2, micro_batch_size=2, lr=1e-2,
                       max_len=256))
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
    from overmem.models.loading import load_tokenizer, resolve_base

    return tiny_reward_model(path, load_tokenizer(resolve_base("tiny")))


def _recorded(run, names) -> dict:
    """(checkpoint, probe, metric) -> {aggregate: value}, read from the run's records directly."""
    out: dict = {}
    for m in run.metrics:
        if m.probe and m.checkpoint in names:
            out.setdefault((m.checkpoint, m.probe, m.metric), {})[m.aggregate] = m.value
    return out


def _ece(confidence, correct, bins=10) -> float:
    """Expected calibration error over equal-width bins, by hand."""
    groups: dict = {}
    for c, ok in zip(confidence, correct):
        groups.setdefault(min(int(c * bins), bins - 1), []).append((c, ok))
    return sum(len(g) / len(confidence) * abs(sum(ok for _, ok in g) / len(g) - sum(c for c, _ in g) / len(g))
               for g in groups.values())


def check_metrics(run, names, n, rows):
    """Every probe number lies inside its recorded 95% interval, and the numbers follow from the
    per-sample sidecars (recomputed here by hand)."""
    obj = probe_json(run, names)
    recorded = _recorded(run, names)
    rd = RunDir(run.path)
    for (name, probe, metric), values in recorded.items():
        assert set(values) == {"", CI_LOW, CI_HIGH}, (name, probe, metric)  # every number with its interval
        assert math.isfinite(values[""]), (name, probe, metric)
        assert values[CI_LOW] - 1e-9 <= values[""] <= values[CI_HIGH] + 1e-9, (name, probe, metric, values)
    for name in names:
        r = obj[name]["robustness"]
        side = rd.read_sidecar(name, "test", "probe-robustness")
        variants = ["plain"] + [f"preamble{i + 1}" for i in range(len(PREAMBLES))]
        assert [(s["variant"], s["idx"]) for s in side] == [(v, i) for v in variants for i in range(rows)]
        for v in variants:
            assert r[f"acc_{v}"] == pytest.approx(sum(s["correct"] for s in side if s["variant"] == v) / rows)
        for i in range(len(PREAMBLES)):
            assert r[f"drop_preamble{i + 1}"] == pytest.approx(r["acc_plain"] - r[f"acc_preamble{i + 1}"])
        assert r["drop_avg"] == pytest.approx(r["acc_plain"] - sum(r[f"acc_preamble{i + 1}"] for i in range(4)) / 4)
        d = obj[name]["diversity"]
        div = rd.read_sidecar(name, "test", "probe-diversity")
        assert len(div) == rows and all(len(q["generations"]) == len(q["correct"]) == n for q in div)
        for k in range(1, n + 1):  # unbiased pass@k = 1 - C(n - c, k) / C(n, k), averaged over queries
            by_hand = [1 - math.comb(n - sum(q["correct"]), k) / math.comb(n, k) for q in div]
            assert d[f"pass@{k}"] == pytest.approx(sum(by_hand) / rows), k
        assert 0 < d["ead"] and 0 < d["distinct1"] <= 1 and "semantic_diversity" in d
        c = obj[name]["calibration"]
        (cal,) = rd.read_sidecar(name, "test", "probe-calibration")
        # calibration scores the same draws as diversity, in order
        assert cal["correct"] == [ok for q in div for ok in q["correct"]] and len(cal["confidence"]) == rows * n
        assert c["mean_confidence"] == pytest.approx(sum(cal["confidence"]) / (rows * n))
        assert c["sample_accuracy"] == pytest.approx(sum(cal["correct"]) / (rows * n))
        assert c["ece"] == pytest.approx(_ece(cal["confidence"], cal["correct"]))
    return obj


def _best_by_rule(row) -> str | None:
    """The compare view's rule, by hand: the best value, when its interval clears every other's."""
    if row.better is None:
        return None
    ranked = sorted(row.values, key=row.values.get, reverse=row.better == "higher")
    top, rest = ranked[0], ranked[1:]
    lo, hi = row.intervals[top]
    if row.better == "higher":
        return top if all(lo > row.intervals[o][1] for o in rest) else None
    return top if all(hi < row.intervals[o][0] for o in rest) else None


def _member_losses(run, ckpt_name) -> tuple[list[float], list[float]]:
    """Mean response NLL of the 8 training rows and of the 8 val rows under a checkpoint (plain forward)."""
    from dataclasses import replace

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from overmem.data.encoding import encode
    from overmem.data.loaders import SplitSpec, select
    from overmem.models.loading import load_tokenizer

    tok = load_tokenizer(run.info.base_model)
    model = AutoModelForCausalLM.from_pretrained(run.info.base_model["path"])
    if ckpt_name != "ep0":
        model = PeftModel.from_pretrained(model, str(run.checkpoint(ckpt_name).path))
    model.eval()
    out = []
    for spec in (run.info.data["fit"], run.info.data["splits"]["val"]):
        rows = select(replace(SplitSpec.from_json(spec), sample=None))[:8]
        losses = []
        for row in rows:
            e = encode(tok, row["query"], row["response"], run.info.prompt_template, 256)
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([e.input_ids])).logits[0].double(), -1)
            nll = [-logp[t - 1, e.input_ids[t]].item() for t in range(e.n_prompt, len(e.input_ids))]
            losses.append(sum(nll) / len(nll))
        out.append(losses)
    return out[0], out[1]


def test_probes_end_to_end_hf(probed_run, tmp_path):
    ood = tmp_path / "ood.jsonl"
    from overmem.data import synthetic

    ood.write_text("".join(json.dumps(r) + "\n" for r in synthetic.generate(3, "ood", 0, 4, "reference")))
    options = ProbeOptions(backend="hf", n_samples=3, limit=8, mia_size=8, max_new_tokens=40,
                           ood={"extra": str(ood)}, reward_model=str(_reward_model(tmp_path / "rm")))
    runner = ProbeRunner(probed_run, options)
    assert resolve_checkpoints(runner.run, ["latest"]) == [LATEST]
    names = ["ep0", LATEST]
    runner.run_probes(names)
    run = load_run(probed_run, strict=True)
    obj = check_metrics(run, names, 3, rows=8)
    for name in names:
        mia = obj[name]["mia"]
        for score in ("loss", "zlib", "mink", "minkpp"):
            assert 0 <= mia[f"auroc_{score}"] <= 1 and 0 <= mia[f"tpr@5%fpr_{score}"] <= 1
        assert 0 <= obj[name]["ood"]["acc_avg"] <= 1 and obj[name]["ood"]["acc_avg"] == obj[name]["ood"]["acc_extra"]
        assert 0 <= obj[name]["diversity"]["best_of_3"] <= 1
    # membership inference: the memorizing checkpoint tells its 8 training rows from 8 unseen ones
    # (swapped member/non-member labels would put these AUROCs below 0.5); the base cannot
    recorded = _recorded(run, names)
    for score in ("loss", "zlib", "mink", "minkpp"):
        assert obj[LATEST]["mia"][f"auroc_{score}"] >= 0.8, score
        assert recorded[(LATEST, "mia", f"auroc_{score}")][CI_LOW] > 0.5, score
    assert obj["ep0"]["mia"]["auroc_loss"] < 0.7
    rd = RunDir(probed_run)
    for name in names:
        side = {s["score"]: s for s in rd.read_sidecar(name, "mia", "probe-mia")}
        assert set(side) == {"loss", "zlib", "mink", "minkpp"}
        for score, s in side.items():  # AUROC = P(member score > non-member score), ties 1/2, by pairs
            assert len(s["members"]) == len(s["heldout"]) == 8
            pairs = [1.0 if m > h else 0.5 if m == h else 0.0 for m in s["members"] for h in s["heldout"]]
            assert obj[name]["mia"][f"auroc_{score}"] == pytest.approx(sum(pairs) / len(pairs)), (name, score)
        # the loss score is -(mean response NLL): members' are the training rows', by a plain forward
        members, heldout = _member_losses(run, name)
        assert sorted(side["loss"]["members"]) == pytest.approx(sorted(-x for x in members), abs=1e-4), name
        assert sorted(side["loss"]["heldout"]) == pytest.approx(sorted(-x for x in heldout), abs=1e-4), name
    # the compare view ranks a checkpoint only where its interval clears the other's
    rows = probe_rows(run, names)
    assert {(r.probe, r.metric) for r in rows} == {(p, m) for (_, p, m) in recorded}
    for row in rows:
        assert row.best() == _best_by_rule(row), (row.probe, row.metric)
    auroc = next(r for r in rows if r.metric == "auroc_loss")
    assert auroc.better == "lower" and auroc.best() == "ep0"  # the base leaks membership less, clearly
    # the probes grade as overmem eval does: plain greedy answers on the same rows are eval's
    Evaluator(probed_run, EvalOptions(backend="hf", splits=("test",), checkpoints=(LATEST,), limit=8,
                                      max_new_tokens=40, metrics=("acc",))).evaluate_pending()
    acc = [m.value for m in load_run(probed_run).metrics if m.checkpoint == LATEST and m.split == "test"
           and m.metric == "acc" and m.probe is None]
    assert acc == [pytest.approx(obj[LATEST]["robustness"]["acc_plain"])]
    plain = [s for s in rd.read_sidecar(LATEST, "test", "probe-robustness") if s["variant"] == "plain"]
    gen = rd.read_sidecar(LATEST, "test", "gen")
    assert [(s["generation"], s["correct"]) for s in plain] == [(g["generation"], g["correct"]) for g in gen]


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
def test_probes_with_vllm_equal_hf_where_tokens_agree(probed_run, tmp_path):
    """The same probes through vLLM and through HF on the memorizing checkpoint: greedy answers
    agree (at most one generation apart, where another CPU's kernels may break a near-tie) and so
    do the robustness numbers; near-greedy draws that came out the same carry the same confidence
    and grade."""
    import shutil

    from tests.helpers import require_vllm

    require_vllm()
    rows, n = 4, 4
    sides = {}
    for backend in ("hf", "vllm"):
        work = tmp_path / backend
        shutil.copytree(probed_run, work)
        options = ProbeOptions(backend=backend, probes=("robustness", "diversity", "calibration"), n_samples=n,
                               limit=rows, max_new_tokens=40, temperature=1e-3)
        ProbeRunner(work, options).run_probes([LATEST])
        run = load_run(work, strict=True)
        obj = check_metrics(run, [LATEST], n, rows)
        rd = RunDir(work)
        sides[backend] = {"obj": obj[LATEST], **{p: rd.read_sidecar(LATEST, "test", f"probe-{p}")
                                                 for p in ("robustness", "diversity", "calibration")}}
    hf, vl = sides["hf"], sides["vllm"]
    greedy = list(zip(hf["robustness"], vl["robustness"]))
    assert len(greedy) == rows * (1 + len(PREAMBLES))
    differ = [(h["variant"], h["idx"]) for h, v in greedy if h["generation"] != v["generation"]]
    assert len(differ) <= 1, differ
    for h, v in greedy:
        assert (h["variant"], h["idx"]) == (v["variant"], v["idx"])
        if h["generation"] == v["generation"]:
            assert h["correct"] == v["correct"]
    if not differ:
        assert vl["obj"]["robustness"] == pytest.approx(hf["obj"]["robustness"])
    draws_hf = [g for q in hf["diversity"] for g in q["generations"]]
    draws_vl = [g for q in vl["diversity"] for g in q["generations"]]
    (cal_hf,), (cal_vl,) = hf["calibration"], vl["calibration"]
    same = 0
    for k, (a, b) in enumerate(zip(draws_hf, draws_vl)):
        if a == b:
            same += 1
            assert cal_vl["confidence"][k] == pytest.approx(cal_hf["confidence"][k], abs=1e-3), k
            assert cal_vl["correct"][k] == cal_hf["correct"][k], k
    assert len(draws_hf) == len(draws_vl) == rows * n and same >= rows  # most near-greedy draws coincide
