"""The run context: what evaluating one run needs, built once and shared.

The evaluator (``overmem eval``, ``train --eval``, OvermemCallback) and the probes
(``overmem probe``) read a run the same way through this one object: its base model
(a model folder's own code allowed only by this invocation's flag, never by the
run's record), prompt format, evaluation length, split definitions and rows, the
models, and how an answer is graded. Grading lives here only, so a probe's accuracy
and eval's accuracy on the same checkpoint, rows and generations are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from overmem.data.answers import GOLD_FORMATS, answers_match, extract_answer
from overmem.data.encoding import Encoded, encode, encode_prompt
from overmem.data.loaders import SplitSpec, select
from overmem.errors import UsageError
from overmem.data.template import PromptFormat
from overmem.evaluation.definitions import recorded_answer, recorded_max_len, recorded_splits
from overmem.evaluation.generators import HFGenerator, choose_generator, text_of
from overmem.evaluation.lm_eval_tasks import LM_EVAL_KIND
from overmem.evaluation.options import DEFAULT_MAX_LEN
from overmem.models.loading import allow_remote_code
from overmem.rundir import RunInfo, RunReader


@dataclass(frozen=True)
class Grade:
    """One generation graded against its reference's gold answer."""

    predicted: str | None  # the answer read from the generation (None: none found)
    correct: bool


class RunContext:
    def __init__(self, reader: RunReader, info: RunInfo, *, trust_remote_code: bool = False, models=None,
                 device: str | None = None, trusted_tasks: frozenset[str] = frozenset()) -> None:
        """``trusted_tasks``: lm-eval task files this invocation names (they may run their Python)."""
        self.reader = reader
        self.rundir = reader.rundir  # the run, or a Trainer folder's overlay
        self.info = info
        self.base = allow_remote_code(info.base_model, trust_remote_code)
        self.specs: dict[str, SplitSpec] = recorded_splits(info)
        self.template = PromptFormat.from_json(info.prompt_template)
        self.recorded_max_len = recorded_max_len(info, None)  # None: the run recorded none
        self.max_len = self.recorded_max_len or DEFAULT_MAX_LEN
        self.trained_formats, self.fallback = recorded_answer(info)
        self._models = models
        self._device = device
        self._rows: dict[str, list[dict]] = {}
        self.trusted_tasks = trusted_tasks
        self._tasks: dict = {}

    # -- models ------------------------------------------------------------------
    @property
    def models(self):
        """Hands out each checkpoint's model (the base loaded once; HFModels unless given)."""
        if self._models is None:
            from overmem.evaluation.hf_models import HFModels

            self._models = HFModels(self.base, device=self._device)
        return self._models

    @property
    def tokenizer(self):
        return self.models.tokenizer

    def generator(self, backend: str, *, checkpoints, max_new_tokens: int, batch_size: int,
                  max_len: int | None = None, **engine):
        """The generation backend for this run (``backend``: auto, hf or vllm); ``max_len``: the
        longest prompt it takes (default the run's evaluation length)."""
        return choose_generator(backend, self.base, self.models, checkpoints=checkpoints,
                                max_len=max_len or self.max_len,
                                max_new_tokens=max_new_tokens, batch_size=batch_size, stops=self.template.stops,
                                **engine)

    def hf_generator(self, batch_size: int) -> HFGenerator:
        """The in-process backend, for checkpoints another backend cannot serve."""
        return HFGenerator(self.models, batch_size, self.template.stops)

    # -- rows and prompts ------------------------------------------------------------
    def task(self, split: str):
        """The lm-eval task that ``split`` is (a TaskSplit), or None for overmem's own splits."""
        source = self.specs[split].source
        if source.kind != LM_EVAL_KIND:
            return None
        if split not in self._tasks:
            from overmem.evaluation.lm_eval_tasks import TaskSplit
            from overmem.models.loading import load_config

            self._tasks[split] = TaskSplit(source, self.tokenizer, load_config(self.base),
                                           trusted=source.ref in self.trusted_tasks)
        return self._tasks[split]

    def own_split(self, split: str, what: str) -> None:
        """UsageError when ``split`` is an lm-eval task: ``what`` needs overmem's own rows."""
        if self.specs[split].source.kind == LM_EVAL_KIND:
            raise UsageError(f"{what} runs on overmem's own splits; {split} is an lm-eval task")

    def rows(self, split: str) -> list[dict]:
        """Every row of ``split`` (read once; written once to samples/_splits for later views)."""
        if split not in self._rows:
            task = self.task(split)
            rows = task.rows() if task is not None else select(self.specs[split])
            self.rundir.write_split_rows(split, rows)
            self._rows[split] = rows
        return self._rows[split]

    def prompt(self, query, split: str | None = None) -> list[int]:
        """Prompt ids: the run's format, or for an lm-eval split its context as lm-eval encodes it."""
        task = self.task(split) if split is not None else None
        return task.prompt(query) if task is not None else encode_prompt(self.tokenizer, query, self.template)

    def encode(self, row: dict, cut: bool = True, split: str | None = None) -> Encoded:
        """Prompt + reference ids, cut at the run's evaluation length (or whole: ``cut=False``);
        an lm-eval split's context and target as lm-eval's loglikelihood pair."""
        task = self.task(split) if split is not None else None
        if task is not None:
            return task.encode(row)
        return encode(self.tokenizer, row["query"], row["response"], self.template, self.max_len if cut else None)

    def generation(self, split: str, max_new_tokens: int) -> tuple[int, tuple[str, ...] | None]:
        """(token budget, stop strings) for generating on ``split``: the options' budget and the
        run's markers (None), or an lm-eval task's own max_gen_toks and until."""
        task = self.task(split)
        return (max_new_tokens, None) if task is None else (task.max_new_tokens, task.until)

    def text(self, ids: list[int], split: str | None = None) -> str:
        """A generation's text, cut at the run's stop markers (an lm-eval split's: at its until)."""
        task = self.task(split) if split is not None else None
        return task.text(ids) if task is not None else text_of(self.tokenizer, ids, self.template.stops)

    # -- grading -----------------------------------------------------------------------
    def answer_formats(self, split: str) -> tuple[str, ...]:
        """How predictions on ``split`` are read: the training format (overmem's own runs), the
        split's own answer format, then every other marker; the last number alone only where
        the run says so (``fallback``)."""
        own = self.specs[split].source.answer_format
        first = list(self.trained_formats) + ([own] if own != "auto" else [])
        return tuple(dict.fromkeys(first + [f for f in GOLD_FORMATS if f not in first]))

    def extract(self, split: str, text: str) -> str | None:
        return extract_answer(text, self.answer_formats(split), self.fallback)

    def grade(self, split: str, text: str, gold, row: dict | None = None) -> Grade:
        """``text`` against ``gold``; on an lm-eval split by the task's filter and metric (``row``
        names its document)."""
        task = self.task(split)
        if task is not None:
            return Grade(*task.grade(row["doc_id"], text))
        predicted = self.extract(split, text)
        return Grade(predicted, answers_match(predicted, gold))
