"""One grading rule: a probe grades a generation exactly as ``overmem eval`` does.

Both go through the run context (overmem.evaluation.context): the run's trained
formats, the split's own answer format, every other marker, and the last number
alone only where the run says so. Before the run context the probes fixed
``fallback=False`` and skipped the split's own format, so the same generation could
be right for eval and wrong for a probe.
"""

from __future__ import annotations

import json

import pytest

from overmem.data.loaders import DataSource, SplitSpec
from overmem.data.template import PromptFormat
from overmem.evaluation.options import EvalOptions
from overmem.evaluation.runner import Evaluator
from overmem.probes.runner import ProbeOptions, ProbeRunner
from overmem.rundir import STATUS_FINISHED, RunDir, RunInfo

GENERATIONS = [
    "Step one.\n#### 12",  # the gsm8k marker
    "so we get \\boxed{12}",  # the split's own format (and a gold format)
    "The answer is: 12",  # metamath
    "#### The result is 12 .",  # the run's trained format
    "I think it is 12 apples",  # a bare last number: right only where the run allows the fallback
    "#### 13",  # wrong
    "no answer at all",
    "#### Step 2: then 12",  # a header, not an answer (its last number counts only with the fallback)
]


def _run(tmp_path, toy_llama, fallback: bool):
    rows = [{"query": f"question {i}", "response": "so \\boxed{12}"} for i in range(3)]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = SplitSpec(DataSource("file", str(data), answer_format="boxed"))
    RunDir(tmp_path / "run").create(RunInfo(
        status=STATUS_FINISHED, base_model={"id": str(toy_llama), "path": str(toy_llama)},
        data={"splits": {"test": spec.to_json()}, "answer": {"formats": ["synthetic"], "fallback": fallback}},
        prompt_template=PromptFormat.parse("alpaca").to_json()))
    return tmp_path / "run"


@pytest.mark.parametrize("fallback", [True, False])
def test_a_probe_and_eval_grade_every_generation_alike(tmp_path, toy_llama, fallback):
    run = _run(tmp_path, toy_llama, fallback)
    evaluator = Evaluator(run, EvalOptions(backend="hf"))
    probes = ProbeRunner(run, ProbeOptions(probes=("robustness",), backend="hf"))
    row = probes.rows[0]
    assert row["answer"] == "12"
    context = probes.context()
    eval_grades = [evaluator.ctx.grade("test", text, row["answer"]) for text in GENERATIONS]
    probe_grades = [context.correct(text, row) for text in GENERATIONS]
    assert probe_grades == [g.correct for g in eval_grades]
    assert [context.extract(text) for text in GENERATIONS] == [g.predicted for g in eval_grades]
    # what the rule is: every marker counts; the bare number only with the run's fallback
    assert probe_grades == [True, True, True, True, fallback, False, False, fallback]
