"""What a probe is: a plug-in that measures one behaviour of a checkpoint.

A probe returns a ``Measurement``: how to compute its metrics over any subset of its
units (queries, or members and non-members), the per-sample details, and its sample
count. The runner computes the point values on all units and a 95% bootstrap
interval by resampling units, so every probe number carries its uncertainty.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

from overmem.params import Param


@dataclass(frozen=True)
class Measurement:
    units: int  # how many independent units (queries) the metrics average over
    metrics: Callable[[Sequence[int]], dict[str, float]]  # metrics over a subset of unit indices
    side: list[dict]  # per-sample details for the sidecar
    n: int  # the sample count recorded with each metric
    strata: tuple[int, ...] = ()  # a group per unit, resampled separately (members/non-members, OOD sets)


@dataclass
class ProbeContext:
    """What every probe may use: the probe split's rows, prompts, generation and grading."""

    rows: list[dict]
    options: object  # ProbeOptions
    prompts: Callable  # (rows, prefix="") -> list[token ids]
    greedy: Callable  # (ckpt, model, prompts) -> list[str]
    sample: Callable  # (ckpt, model, prompts, n) -> list[list[(ids, logps)]] (cached per checkpoint)
    text: Callable  # (ids) -> str, cut at the run's stop markers
    correct: Callable  # (text, row) -> bool
    correct_answer: Callable  # (extracted answer, row) -> bool
    extract: Callable  # (text) -> answer | None
    embed: Callable  # (texts) -> embeddings or None
    vocab_size: int
    info: object  # RunInfo
    tokenizer: object
    encode: Callable  # (row) -> Encoded (prompt + reference, the run's template)
    device: str
    extra: dict = field(default_factory=dict)


class Probe(ABC):
    name: ClassVar[str]
    help: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    split: ClassVar[str | None] = None  # where records go; None: the probe split (test, else val)
    # Which side of each metric is better, by the start of the metric's name ("acc_" covers
    # acc_plain, acc_preamble1, ...); a metric named by none has no better side.
    better: ClassVar[dict[str, str]] = {}

    def direction(self, metric: str) -> str | None:
        """'higher', 'lower' or None (no better side, e.g. a mean confidence)."""
        return next((side for start, side in self.better.items() if metric.startswith(start)), None)

    @abstractmethod
    def measure(self, ctx: ProbeContext, ckpt, model) -> Measurement:
        """Measure ``ckpt`` (``model`` is its HF model, loaded once for all probes)."""
