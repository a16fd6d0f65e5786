"""lm-eval tasks as splits: overmem's accuracy is lm-eval's own, its perplexity a float64 recomputation.

The task (tests/data/lm_eval_task/arith.yaml) is a gsm8k-like generate_until task over local
json files with a regex strict match; its data paths are relative to the repository root,
so these tests run there. A tiny LoRA run learns its 16 rows over 8 epochs, so accuracy moves
from 0% to most rows right across the adapters compared.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from tests.helpers import read_jsonl, run_cli

ROOT = Path(__file__).parent.parent
TASK_DIR = ROOT / "tests" / "data" / "lm_eval_task"
TASK_YAML = TASK_DIR / "arith.yaml"
TASK = "overmem_arith"
COMPARED = ("ep4", "ep6", "ep8")  # adapters of one base, at different accuracies

pytest.importorskip("lm_eval")


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def task_source(tmp_path_factory) -> Path:
    """A tiny LoRA run trained on the task's 16 rows (query: the question; reference: " " + the
    answer, raw prompts), 8 epochs; nothing evaluated."""
    from overmem.data.template import PromptFormat
    from overmem.training.setup import DataOptions, build_config
    from overmem.training.trainer import train

    root = tmp_path_factory.mktemp("lm_eval")
    fit = root / "fit.jsonl"
    fit.write_text("".join(json.dumps({"query": r["question"], "response": " " + r["answer"]}) + "\n"
                           for r in read_jsonl(TASK_DIR / "test.jsonl")))
    out = root / "run"
    train(build_config(model="tiny", data=DataOptions(str(fit), eval_size=2), out=str(out), method="lora",
                       epochs=8, lr=6e-3, batch_size=4, micro_batch_size=4, max_len=256,
                       template=PromptFormat.parse("raw").to_json()))
    return out


def _evaluated(source: Path, dst: Path, num_fewshot: int | None) -> Path:
    from overmem.evaluation.lm_eval_tasks import TaskOptions, task_splits
    from overmem.evaluation.runner import EvalOptions, Evaluator

    shutil.copytree(source, dst)
    specs = {k: v.to_json() for k, v in task_splits(str(TASK_YAML), TaskOptions(num_fewshot)).items()}
    evaluator = Evaluator(dst, EvalOptions(backend="hf", batch_size=1, splits=(TASK,), split_files=specs,
                                           checkpoints=COMPARED))
    try:
        evaluator.evaluate_pending()
    finally:
        evaluator.close()
    return dst


def _means(run: Path, metric: str) -> dict[str, float]:
    from overmem.rundir import load_run

    return {m.checkpoint: m.value for m in load_run(run).metrics
            if m.split == TASK and m.metric == metric and m.aggregate == "mean"}


def _lm_eval(run: Path, ckpt: str, num_fewshot: int | None) -> tuple[float, list[str]]:
    """lm-eval's own number for one adapter, as its users run it (model "hf", peft=ADAPTER)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    base = json.loads((run / "run.json").read_text())["base_model"]["path"]
    out = simple_evaluate(model="hf", model_args=f"pretrained={base},peft={run / 'checkpoints' / ckpt},dtype=float32",
                          tasks=[str(TASK_YAML)], num_fewshot=num_fewshot, batch_size=1, device="cpu",
                          log_samples=True, task_manager=TaskManager(include_path=str(TASK_DIR)))
    samples = sorted((s for s in out["samples"][TASK] if s["filter"] == "strict-match"), key=lambda s: s["doc_id"])
    return out["results"][TASK]["exact_match,strict-match"], [s["filtered_resps"][0] for s in samples]


@pytest.mark.slow
@pytest.mark.parametrize("num_fewshot", [None, 2])
def test_accuracy_is_lm_evals_on_every_adapter(task_source, tmp_path, num_fewshot):
    run = _evaluated(task_source, tmp_path / "run", num_fewshot)
    ours = _means(run, "acc")
    assert sorted(ours) == sorted(COMPARED)
    for ckpt in COMPARED:
        theirs, answers = _lm_eval(run, ckpt, num_fewshot)
        assert ours[ckpt] == theirs, ckpt
        sidecar = read_jsonl(run / "samples" / ckpt / f"{TASK}.gen.jsonl")
        assert [s["extracted"] for s in sorted(sidecar, key=lambda s: s["idx"])] == answers, ckpt
    # the adapters differ, so the equality is not a constant
    assert len(set(ours.values())) >= 2 and max(ours.values()) >= 0.25


@pytest.mark.slow
def test_perplexity_is_the_targets_in_float64(task_source, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = _evaluated(task_source, tmp_path / "run", None)
    base = json.loads((run / "run.json").read_text())["base_model"]["path"]
    tok = AutoTokenizer.from_pretrained(base)
    docs = read_jsonl(TASK_DIR / "test.jsonl")
    ours = _means(run, "ppl")
    for ckpt in COMPARED:
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float64),
                                          str(run / "checkpoints" / ckpt)).eval()
        ppls = []
        for doc in docs:  # the target after the context, tokenized together as lm-eval's loglikelihood does
            context_ids = tok.encode(doc["question"])
            whole = tok.encode(doc["question"] + " " + doc["answer"])
            with torch.no_grad():
                logp = model(torch.tensor([whole])).logits[0].log_softmax(-1)
            nll = -sum(float(logp[t - 1, whole[t]]) for t in range(len(context_ids), len(whole)))
            ppls.append(math.exp(nll / (len(whole) - len(context_ids))))
        assert ours[ckpt] == pytest.approx(sum(ppls) / len(ppls), rel=1e-5), ckpt


def test_a_task_split_is_remembered_and_drives_phases(task_source, tmp_path):
    from overmem.rundir import load_run
    from overmem.summary import summarize

    run = tmp_path / "run"
    shutil.copytree(task_source, run)
    result = run_cli("eval", str(run), "--task", str(TASK_YAML), "--splits", TASK, "--checkpoints", "ep8",
                     "--metrics", "ppl", "--backend", "hf", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    spec = json.loads((run / "run.json").read_text())["data"]["splits"][TASK]
    assert spec["source"] == {**spec["source"], "kind": "lm-eval", "ref": str(TASK_YAML),
                              "params": {"task": TASK, "num_fewshot": None, "apply_chat_template": False,
                                         "fewshot_as_multiturn": False}}
    assert summarize(load_run(run), split=TASK).split == TASK
    # a task file can run code: a later command loads it only when it names it again
    asked = run_cli("eval", str(run), "--splits", TASK, "--checkpoints", "ep7", "--metrics", "ppl",
                    "--backend", "hf", cwd=ROOT)
    assert asked.returncode == 2 and f"add --task {TASK_YAML}" in asked.stderr and "Traceback" not in asked.stderr
    lines = (run / "metrics.jsonl").read_text().count("\n")
    others = run_cli("eval", str(run), "--checkpoints", "ep7", "--metrics", "ppl", "--backend", "hf", cwd=ROOT)
    assert others.returncode == 0, others.stderr
    assert f"split {TASK} (the lm-eval task file" in others.stdout + others.stderr
    assert (run / "metrics.jsonl").read_text().count("\n") > lines  # its own splits were evaluated
    again = run_cli("eval", str(run), "--task", str(TASK_YAML), "--splits", TASK, "--checkpoints", "ep7",
                    "--metrics", "ppl", "--backend", "hf", cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert set(_means(run, "ppl")) == {"ep7", "ep8"}


def test_a_corrupt_recorded_task_is_exit_3_before_any_work(task_source, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(task_source, run)
    info = json.loads((run / "run.json").read_text())
    info["data"]["splits"]["arith"] = {"source": {"kind": "lm-eval", "ref": "gsm8k",
                                                  "params": {"task": "gsm8k", "num_fewshot": "3"}}}
    (run / "run.json").write_text(json.dumps(info))
    before = (run / "metrics.jsonl").read_text()
    result = run_cli("eval", str(run), "--metrics", "ppl", "--backend", "hf", cwd=ROOT)
    assert result.returncode == 3 and "num_fewshot" in result.stderr and "Traceback" not in result.stderr
    assert (run / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("yaml_text, expected", [
    ("task: mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {test}\ntest_split: test\n"
     "output_type: multiple_choice\ndoc_to_text: '{{{{question}}}}'\ndoc_to_target: 0\ndoc_to_choice: ['a', 'b']\n",
     "is a multiple_choice task"),
    ("task: sampled\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {test}\ntest_split: test\n"
     "output_type: generate_until\ndoc_to_text: '{{{{question}}}}'\ndoc_to_target: '{{{{answer}}}}'\n"
     "generation_kwargs:\n  do_sample: true\n  temperature: 0.7\n", "samples several generations"),
])
def test_tasks_overmem_cannot_score_are_one_line(tmp_path, yaml_text, expected):
    path = tmp_path / "task.yaml"
    path.write_text(yaml_text.format(test=TASK_DIR / "test.jsonl"))
    result = run_cli("eval", str(tmp_path), "--task", str(path), cwd=ROOT)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_unknown_task_is_one_line(tmp_path):
    result = run_cli("eval", str(tmp_path), "--task", "no_such_task_anywhere", cwd=ROOT)
    assert result.returncode == 2 and "lm-eval has no task 'no_such_task_anywhere'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_task_file_is_loaded_only_when_the_command_names_it(tmp_path):
    """A task YAML can run code (!function, unsandboxed Jinja, metric paths): a run.json that
    names one never makes overmem load it; naming the file on the command line does."""
    from overmem.data.loaders import DataSource
    from overmem.errors import DataError
    from overmem.evaluation.lm_eval_tasks import TaskSplit
    from overmem.models.loading import load_tokenizer, resolve_base

    folder = tmp_path / "task"
    folder.mkdir()
    marker = tmp_path / "imported"
    (folder / "utils.py").write_text(f"open({str(marker)!r}, 'w').close()\n\ndef docs(ds):\n    return ds\n")
    (folder / "base.yaml").write_text(TASK_YAML.read_text().replace("task: overmem_arith", "task: base_task"))
    (folder / "coded.yaml").write_text("include: base.yaml\ntask: coded\nprocess_docs: !function utils.docs\n")
    source = DataSource("lm-eval", str(folder / "coded.yaml"), params={"task": "coded"})
    tok = load_tokenizer(resolve_base("tiny"))
    with pytest.raises(DataError, match="add --task"):
        TaskSplit(source, tok)
    # a registry name whose task is a path: lm-eval would load the file; overmem refuses it
    for task in (str(folder / "coded.yaml"), "no_such_registered_task"):
        with pytest.raises(DataError):
            TaskSplit(DataSource("lm-eval", "gsm8k", params={"task": task}), tok)
    assert not marker.exists()
    assert len(TaskSplit(source, tok, trusted=True).rows()) == 16
    assert marker.exists()


def test_task_files_that_would_break_the_run_are_refused_before_writing(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ROOT / "tests" / "data" / "paper_run", run)
    before = (run / "run.json").read_text()
    bad = tmp_path / "bad"
    bad.mkdir()
    cases = {"name.yaml": ("task: overmem_arith", "task: '../evil'", "one plain file name"),
             "budget.yaml": ("max_gen_toks: 48", "max_gen_toks: abc", "not a token count"),
             "until.yaml": ('- "Question:"', "- 5", "not a list of strings")}
    for file, (old, new, expected) in cases.items():
        (bad / file).write_text(TASK_YAML.read_text().replace(old, new))
        result = run_cli("eval", str(run), "--task", str(bad / file), cwd=ROOT)
        assert result.returncode == 2 and expected in result.stderr, (file, result.stderr)
        assert "Traceback" not in result.stderr
    assert (run / "run.json").read_text() == before


def test_without_lm_eval_task_says_how_to_install(monkeypatch):
    from importlib import metadata

    from overmem.errors import UsageError
    from overmem.evaluation import lm_eval_tasks

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    with pytest.raises(UsageError, match=r"pip install -e '\.\[lm-eval\]'"):
        lm_eval_tasks.require_lm_eval()
