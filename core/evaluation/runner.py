"""The evaluator: every checkpoint of a run x every split -> ppl and accuracy records.

Idempotent (a (checkpoint, split, metric) already in metrics.jsonl is skipped
unless ``force``), safe with several evaluators (a claim file per checkpoint,
released on failure) and able to follow a training run until it ends.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

from overmem.data.loaders import SplitSpec
from overmem.data.template import PromptFormat
from overmem.errors import ClaimLost, CorruptRun, ModelError, UnknownCheckpoint, UnknownSplit
from overmem.evaluation import perplexity
from overmem.evaluation.context import RunContext
from overmem.evaluation.definitions import Definitions, define
from overmem.evaluation.generators import HFGenerator
from overmem.evaluation.lm_eval_tasks import LM_EVAL_KIND, needs_command_line
from overmem.evaluation.options import EvalOptions
from overmem.progress import EVAL, Failed, Finished, Listener, Note, Skipped, Started, counter, ignore
from overmem.rundir import Metric, RunReader
from overmem.rundir.lines import MEAN, METRIC_ACC, METRIC_PPL, grade_string, ordered_splits
from overmem.rundir.samples import GenSample, PplSample
from overmem.merging.format import check_weights
from overmem.rundir.checkpoint import adapter_config, is_adapter
from overmem.rundir.records import ENDED, CheckpointInfo, Run

class Evaluator:
    def __init__(self, run_path: str | Path, options: EvalOptions = EvalOptions(), *,
                 on_event: Listener | None = None, models=None) -> None:
        options.validate()  # before any work
        self.reader = RunReader(run_path)
        self.rundir = self.reader.rundir  # the run, or a Trainer folder's overlay
        self.options = options
        self.on_event = on_event or ignore
        template = PromptFormat.from_json(options.template) if options.template else None
        info = define(self.reader, Definitions(dict(options.split_files), template, options.max_len, options.base,
                                               options.acc_metric))
        given_tasks = frozenset(spec["source"]["ref"] for spec in options.split_files.values()
                                if spec["source"]["kind"] == LM_EVAL_KIND)  # this invocation's --task files
        self.ctx = RunContext(self.reader, info, trust_remote_code=options.trust_remote_code, models=models,
                              device=options.device, trusted_tasks=given_tasks)
        self.specs = self._split_specs()
        for split in self.specs:  # an lm-eval task that cannot be built is one line before any work
            self.ctx.task(split)
        self._generator = None
        self.generated_tokens = self.generated_rows = 0  # by this evaluator (benchmarks/adaptive.py, tests)
        self._claim = None
        self._forced: set[str] = set()
        self._rounds = None
        if options.adaptive:
            from overmem.evaluation.rounds import Rounds

            self._rounds = Rounds(self)
            if METRIC_ACC not in options.metrics:
                self.on_event(Note(EVAL, text="--adaptive: nothing to adapt with --metrics ppl (perplexity is one "
                                              "forward pass over every row)"))
        self.failed: dict[str, str] = {}  # checkpoint -> why it could not be evaluated (not retried)

    # -- setup -------------------------------------------------------------------
    def _split_specs(self) -> dict[str, SplitSpec]:
        defined = self.ctx.specs
        wanted = ordered_splits(self.options.splits or self._loadable(defined))
        unknown = [s for s in wanted if s not in defined]
        if unknown:
            have = ", ".join(defined) or "none"
            raise UnknownSplit(f"split(s) {', '.join(unknown)} are not defined for this run (defined: {have}); "
                               "give --split-file NAME=PATH")
        return {s: defined[s] for s in wanted}

    def _loadable(self, defined: dict[str, SplitSpec]) -> list[str]:
        """Every defined split but lm-eval task files this command does not name (they can run
        code: overmem.evaluation.lm_eval_tasks), each of those said once."""
        out = []
        for name, spec in defined.items():
            if spec.source.kind == LM_EVAL_KIND and needs_command_line(spec.source) \
                    and spec.source.ref not in self.ctx.trusted_tasks:
                self.on_event(Note(EVAL, name, split=name, text=(
                    f"split {name} (the lm-eval task file {spec.source.ref}) is skipped: a task file is loaded only "
                    f"when the command names it (--task {spec.source.ref})")))
            else:
                out.append(name)
        return out

    @property
    def template(self) -> PromptFormat:
        return self.ctx.template

    def generator(self):
        if self._generator is None:
            o = self.options
            engine = {k: v for k, v in (("gpu_memory_utilization", o.gpu_memory_utilization),
                                        ("tensor_parallel_size", o.tensor_parallel_size)) if v is not None}
            # lm-eval tasks bring their own prompt lengths and token budgets: the engine takes the longest
            # (their longest prompt, not the model's whole context, which can be far beyond the KV cache)
            tasks = [s for s in self.specs if self.ctx.task(s) is not None]
            budget = max([o.max_new_tokens] + [self.ctx.task(s).max_new_tokens for s in tasks])
            longest = max([self.ctx.max_len] + [len(self.ctx.prompt(r["query"], s)) for s in tasks for r in self.rows(s)])
            self._generator = self.ctx.generator(o.backend, checkpoints=self.reader.snapshot().checkpoints,
                                                 max_new_tokens=budget, batch_size=o.batch_size, max_len=longest,
                                                 **engine)
        return self._generator

    def rows(self, split: str) -> list[dict]:
        rows = self.ctx.rows(split)
        return rows[: self.options.limit] if self.options.limit else rows

    def gradable(self, split: str) -> bool:
        """True when some reference of the split states a gold answer (else accuracy is skipped)."""
        return any(r.get("answer") is not None for r in self.rows(split))

    # -- what is left ---------------------------------------------------------------
    def todo(self, run: Run, names: tuple[str, ...] | None = None) -> list[tuple[CheckpointInfo, list[tuple[str, str]]]]:
        """What is left: each checkpoint of ``names`` (default: the options' checkpoints, else
        all) with the (split, metric) pairs it still needs."""
        # overmem's own records (aggregate "mean"); an HF Trainer's eval_loss (token ppl) or
        # accuracy logged through OvermemCallback does not count as evaluated
        done = {(m.checkpoint, m.split, m.metric) for m in run.metrics if m.probe is None and m.aggregate == MEAN}
        out = []
        # under --adaptive, accuracy is planned in rounds (overmem.evaluation.rounds)
        metrics = [m for m in self.options.metrics if not (self.options.adaptive and m == METRIC_ACC)]
        for ckpt in self.candidates(run, names):
            redo = self.options.force and ckpt.name not in self._forced  # --force: once per checkpoint
            need = [(s, m) for s in self.specs for m in metrics
                    if (m != METRIC_ACC or self.gradable(s)) and (redo or (ckpt.name, s, m) not in done)]
            if need:
                out.append((ckpt, need))
        return out

    def candidates(self, run: Run, names: tuple[str, ...] | None = None) -> list[CheckpointInfo]:
        """The checkpoints of ``names`` (default: the options' checkpoints, else all) that can be
        evaluated: the base, or a checkpoint with a folder, that has not failed."""
        chosen = run.checkpoints
        wanted = names if names is not None else self.options.checkpoints
        if wanted is not None:
            have = {c.name for c in run.checkpoints}
            missing = [n for n in wanted if n not in have]
            if missing:
                raise UnknownCheckpoint(f"no checkpoint(s) {', '.join(missing)} in {run.path}")
            chosen = [c for c in run.checkpoints if c.name in wanted]
        return [c for c in chosen if (c.path is not None or c.is_base) and c.name not in self.failed]

    # -- evaluation -------------------------------------------------------------------
    def evaluate_pending(self, *, only_one: bool = False, names: tuple[str, ...] | None = None) -> int:
        """Evaluate what is left (claiming each checkpoint) of ``names`` (default: the options'
        checkpoints); returns how many were done. Under --adaptive, perplexity first, then the
        rounds of generation over every checkpoint (overmem.evaluation.rounds)."""
        if self._rounds is None:
            return len(self._evaluate_todo(only_one, names))
        # perplexity of every pending checkpoint first: it fixes the band the plan needs
        done = self._evaluate_todo(False, names)
        return len(done | self._rounds.run(names))

    def _evaluate_todo(self, only_one: bool, names: tuple[str, ...] | None) -> set[str]:
        count: set[str] = set()
        for ckpt, _ in self.todo(self.reader.snapshot(), names):
            def work(ckpt=ckpt) -> bool:
                # what is left now: another evaluator may have finished it since the list was made
                need = dict((c.name, n) for c, n in self.todo(self.reader.snapshot(), names)).get(ckpt.name)
                if not need:
                    return False
                try:
                    self.evaluate_checkpoint(ckpt, need)
                finally:
                    self._forced.add(ckpt.name)
                return True

            if self.under_claim(ckpt, work):
                count.add(ckpt.name)
                if only_one:
                    break
        return count

    def under_claim(self, ckpt: CheckpointInfo, work: Callable[[], bool]) -> bool:
        """Run ``work`` holding ``ckpt``'s claim (its heartbeat beating) and return what it returns;
        False when another evaluator holds the claim, when it is taken over meanwhile, or when
        the checkpoint cannot be evaluated (recorded in ``failed`` and said: the others go on)."""
        claim = self.rundir.try_claim(ckpt.name, steal=self.options.steal_claims, timeout=self.options.claim_timeout)
        if claim is None:
            self.on_event(Skipped(EVAL, ckpt.name, text="claimed by another evaluator"))
            return False
        with claim.heartbeat():
            self._claim = claim
            try:
                return work()
            except ClaimLost as exc:
                self.on_event(Note(EVAL, ckpt.name, text=str(exc)))
            except (ModelError, CorruptRun) as exc:
                self.failed[ckpt.name] = str(exc)
                self.on_event(Failed(EVAL, ckpt.name, text=str(exc)))
            finally:
                self._claim = None
        return False

    def evaluate_one(self, name: str) -> int:
        """Evaluate what is left of checkpoint ``name`` only (a training's or a callback's latest save)."""
        return self.evaluate_pending(names=(name,))

    def _holding(self, checkpoint: str) -> None:
        """ClaimLost when this evaluator's claim on ``checkpoint`` was taken over meanwhile: then
        another evaluator writes its records and per-sample files (each exactly once)."""
        if self._claim is not None and not self._claim.held():
            raise ClaimLost(f"the claim on {checkpoint} was taken over (its heartbeat stalled); "
                            "dropping this evaluator's results for it")

    def _write_samples(self, checkpoint: str, split: str, samples: list) -> None:
        self._holding(checkpoint)
        self.rundir.write_samples(checkpoint, split, samples)

    def _record(self, records: list[Metric]) -> None:
        """Append records, unless this evaluator's claim was taken over meanwhile."""
        if not records:
            return
        self._holding(records[0].checkpoint)
        if self.options.force:  # a deliberate re-evaluation supersedes the earlier records
            records = [replace(r, replaces=True) for r in records]
        self.rundir.append(records)

    def follow(self, interval: float = 1.0, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Evaluate checkpoints as they appear, in order, until the training run ends."""
        total = 0
        while not should_stop():
            done = self.evaluate_pending(only_one=True)
            total += done
            if done:
                continue
            run = self.reader.snapshot()
            if run.status in ENDED and not self.todo(run):
                break
            time.sleep(interval)
        return total

    def check_failures(self) -> None:
        """CorruptRun listing the checkpoints that could not be evaluated, if any (call at the end)."""
        if self.failed:
            names = ", ".join(self.failed)
            first = next(iter(self.failed.values()))
            raise CorruptRun(f"{len(self.failed)} checkpoint(s) could not be evaluated: {names} (first: {first}); "
                             "the others were")

    def evaluate_checkpoint(self, ckpt: CheckpointInfo, need: Iterable[tuple[str, str]]) -> list[Metric]:
        need = list(need)
        self.check_files(ckpt)
        records: list[Metric] = []
        gen = self.generator_for(ckpt) if any(m == METRIC_ACC for _, m in need) else None
        in_process = gen is None or isinstance(gen, HFGenerator)
        self.on_event(Started(EVAL, ckpt.name, text=getattr(gen, "name", "hf")))
        if any(m == METRIC_PPL for _, m in need) or in_process:
            with self.ctx.models.use(ckpt) as model:
                for split, metric in need:
                    if metric == METRIC_PPL:
                        records += self._ppl(ckpt, split, model)
                    elif in_process:
                        records += self._accuracy(ckpt, split, gen, model)
        if not in_process:
            for split, metric in need:
                if metric == METRIC_ACC:
                    records += self._accuracy(ckpt, split, gen, None)
        self.on_event(Finished(EVAL, ckpt.name))
        return records

    def check_files(self, ckpt: CheckpointInfo) -> None:
        """A tampered safetensors header or adapter config is one line naming the file, before
        any library maps it."""
        if not ckpt.is_base and ckpt.path is not None:
            check_weights(ckpt.path)
            if is_adapter(ckpt.path):
                adapter_config(ckpt.path)

    def generator_for(self, ckpt: CheckpointInfo):
        """The generator that serves ``ckpt``: the run's, else the hf backend (said once per checkpoint)."""
        gen = self.generator()
        if reason := gen.serves(ckpt):
            label = getattr(gen, "label", gen.name)
            self.on_event(Note(EVAL, ckpt.name, text=f"{label} cannot serve {ckpt.name}: {reason}; "
                                                     "using the hf backend for it"))
            gen = self.ctx.hf_generator(self.options.batch_size)
        return gen

    def _progress(self, ckpt, split, part, total):
        return counter(self.on_event, EVAL, ckpt.name, total, split=split, part=part)

    def _ppl(self, ckpt, split, model) -> list[Metric]:
        rows = self.rows(split)
        encoded = [self.ctx.encode(r, split=split) for r in rows]
        cut = sum(e.truncated for e in encoded)
        if cut:
            empty = sum(e.n_response == 0 for e in encoded)
            self.on_event(Note(EVAL, ckpt.name, split=split, text=(
                f"{cut} of {len(rows)} {split} references are cut at max_len {self.ctx.max_len} (scored on their first "
                f"tokens{f'; {empty} have no response token left and are not scored' if empty else ''})")))
        samples = perplexity.score(model, encoded, self.ctx.tokenizer.pad_token_id, self.options.batch_size,
                                   self.ctx.models.device,
                                   progress=self._progress(ckpt, split, "ppl", len(rows)),
                                   on_note=lambda text: self.on_event(Note(EVAL, ckpt.name, split=split, text=text)))
        self._write_samples(ckpt.name, split, [
            PplSample(s.idx, s.nll_sum, s.n_tokens, encoded[s.idx].truncated) for s in samples])
        now = time.time()
        scored = sum(1 for s in samples if s.n_tokens)
        records = [Metric(ckpt.name, split, METRIC_PPL, value, aggregate, scored, now)
                   for aggregate, value in perplexity.aggregates(samples).items()]
        self._record(records)
        return records

    def _accuracy(self, ckpt, split, gen, model) -> list[Metric]:
        rows = self.rows(split)
        graded = [(i, r) for i, r in enumerate(rows) if r.get("answer") is not None]
        self._note_ungradable(ckpt, split, len(graded))
        if not graded:
            return []
        sidecar = self.generate_rows(ckpt, split, graded, gen, model)
        self._write_samples(ckpt.name, split, sidecar)
        record = self.acc_record(ckpt.name, split, sidecar)
        self._record([record])
        return [record]

    def _note_ungradable(self, ckpt, split, graded: int) -> None:
        total = len(self.rows(split))
        if graded < total:
            fmt = self.specs[split].source.answer_format
            self.on_event(Note(EVAL, ckpt.name, split=split, text=(
                f"{total - graded} of {total} {split} references state no gold answer "
                f"(answer format {fmt}); accuracy counts the other {graded}")))

    def generate_rows(self, ckpt, split, items: list[tuple[int, dict]], gen, model) -> list[GenSample]:
        """Greedy generations of ``items`` ((row index, row) pairs of ``split``), graded."""
        prompts = [self.ctx.prompt(r["query"], split) for _, r in items]
        budget, until = self.ctx.generation(split, self.options.max_new_tokens)
        outputs = gen.greedy(ckpt, prompts, budget, model=model, until=until,
                             progress=self._progress(ckpt, split, "gen", len(items)))
        self.generated_tokens += sum(len(ids) for ids in outputs)
        self.generated_rows += len(outputs)
        samples = []
        for (i, row), ids in zip(items, outputs):
            text = self.ctx.text(ids, split)
            grade = self.ctx.grade(split, text, row["answer"], row)
            samples.append(GenSample(i, text, grade.predicted, row["answer"], grade.correct))
        return samples

    def acc_record(self, checkpoint: str, split: str, samples: list[GenSample], looks: int | None = None,
                   rows: list[dict] | None = None) -> Metric:
        """The accuracy record of ``samples`` (of ``rows``, default the split's evaluated rows),
        with their per-row grades."""
        rows = self.rows(split) if rows is None else rows
        gradable = {i for i, r in enumerate(rows) if r.get("answer") is not None}
        correct = {s.idx: s.correct for s in samples if s.idx in gradable}
        right = sum(correct.values())
        return Metric(checkpoint, split, METRIC_ACC, right / len(correct), MEAN, len(correct), time.time(),
                      grades=grade_string(len(rows), correct, gradable), looks=looks)

    def close(self) -> None:
        if self._generator is not None:
            self._generator.close()
