"""``eval --adaptive``: generation in rounds, each checkpoint only as far as its verdict needs.

The evaluator first measures perplexity of every checkpoint (cheap, and it fixes the
band and the over-memorized candidates); then, round after round, it makes the plan of
overmem.adaptive from the run's records and generates each checkpoint's next look: the
rows of the fixed order it has not graded yet. After every batch of a look the sidecar
holds every row graded so far (written under a temporary name and renamed), and an
accuracy record with its per-row grades follows the look, so a run killed mid-look
resumes from its sidecar: the batch in progress is generated again, a row the sidecar
holds never is, and rows an earlier full evaluation graded count as graded.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from overmem.adaptive import plan, row_order
from overmem.errors import CorruptRun
from overmem.evaluation.generators import HFGenerator
from overmem.progress import EVAL, Finished, Note, Started
from overmem.rundir.claims import is_stale
from overmem.rundir.lines import MAX_LOOKS, MEAN, METRIC_ACC, Metric, extends
from overmem.rundir.records import CheckpointInfo, Run
from overmem.rundir.samples import GenSample
from overmem.summary import points_for
from overmem.values import build_rows


class Rounds:
    """The adaptive part of one Evaluator (overmem.evaluation.runner)."""

    def __init__(self, evaluator) -> None:
        self.ev = evaluator
        self.fresh: set[tuple[str, str]] = set()  # (checkpoint, split) graded again by this evaluator (--force)
        self.left: set[str] = set()  # claimed by another evaluator, or lost: left to it in this call
        self._cache: dict[tuple[str, str], tuple[tuple, dict[int, GenSample]]] = {}

    def splits(self) -> list[str]:
        return [s for s in self.ev.specs if METRIC_ACC in self.ev.options.metrics and self.ev.gradable(s)]

    def run(self, names: tuple[str, ...] | None = None) -> set[str]:
        """Generate round after round until the verdict of every checkpoint of ``names`` (default:
        the options') is settled or complete; returns the checkpoints that got rows."""
        touched: set[str] = set()
        self.left.clear()  # a checkpoint claimed elsewhere last time is tried again
        while True:
            work = self.work(names)
            if not work:
                return touched
            for ckpt, jobs in work:
                if self.look(ckpt, jobs):
                    touched.add(ckpt.name)

    # -- what each checkpoint has ---------------------------------------------------
    def graded(self, name: str, split: str) -> dict[int, GenSample]:
        """The rows of ``split`` the sidecar of ``name`` holds graded (empty under --force until
        this evaluator grades them again, or when the sidecar is not this split's)."""
        if self.ev.options.force and (name, split) not in self.fresh:
            return {}
        path = self.ev.rundir.sidecar(name, split, "gen")
        try:
            stat = path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            return {}
        cached = self._cache.get((name, split))
        if cached is not None and cached[0] == key:
            return cached[1]
        state = self._read(name, split, path)
        self._cache[(name, split)] = (key, state)
        return state

    def rows(self, split: str) -> list[dict]:
        """Every row of ``split``: under --limit the cap is a count of rows in the shared order,
        so grades always cover the whole split and rows graded beyond the limit are kept."""
        return self.ev.ctx.rows(split)

    def cap(self, split: str) -> int:
        gradable = sum(1 for r in self.rows(split) if r.get("answer") is not None)
        return min(gradable, self.ev.options.limit) if self.ev.options.limit else gradable

    def _read(self, name: str, split: str, path: Path) -> dict[int, GenSample]:
        rows = self.rows(split)
        try:
            samples = self.ev.rundir.read_samples(name, split, GenSample)
        except (CorruptRun, TypeError, ValueError, AttributeError, OSError):
            samples = None
        state = {}
        for s in samples or ():
            if samples is None or not _sample_ok(s):
                samples = None
                break
            if 0 <= s.idx < len(rows) and rows[s.idx].get("answer") is not None:
                if s.gold != rows[s.idx]["answer"]:  # graded on another definition of the split
                    samples = None
                    break
                state[s.idx] = s
        if samples is None:
            self.ev.on_event(Note(EVAL, name, split=split, text=(
                f"{path.name} of {name} does not hold this split's rows; none of them is reused")))
            return {}
        return state

    def _catch_up(self, latest: Metric | None, name: str, split: str, state: dict[int, GenSample]) -> None:
        """A record for what the sidecar holds when it grades more than the latest record and
        keeps its grades (a run killed between the two), or adds the grades an earlier full
        evaluation recorded without; any other disagreement is left as it is."""
        if not state:
            return
        record = self.ev.acc_record(name, split, list(state.values()),
                                    looks=_looks(latest, len(state), self.cap(split)), rows=self.rows(split))
        if latest is None or (latest.grades is None and latest.n == record.n and latest.value == record.value) \
                or (extends(record.grades, latest.grades) and record.n > (latest.n or 0)):
            self.ev._record([record])

    # -- the plan -------------------------------------------------------------------
    def work(self, names: tuple[str, ...] | None = None) -> list[tuple[CheckpointInfo, list[tuple[str, int]]]]:
        """Each checkpoint of ``names`` with the (split, rows to have) of its next look, in trajectory order."""
        run = self.ev.reader.snapshot()
        chosen = [c for c in self.ev.candidates(run, names) if c.name not in self.left]
        states = {(c.name, s): self.graded(c.name, s) for c in chosen for s in self.splits()}
        # a live evaluator may be between its sidecar and its record (a dead one's claim is no matter)
        busy = {n for n in self.ev.rundir.claimed()
                if not is_stale(self.ev.rundir.claim_path(n), self.ev.options.claim_timeout)}
        latest_acc = _latest_accs(run)
        for (name, split), state in states.items():
            if name not in busy:
                self._catch_up(latest_acc.get((name, split)), name, split, state)
        run = self.ev.reader.snapshot()
        rows, _ = build_rows(run)
        latest_acc = _latest_accs(run)
        jobs: dict[str, list[tuple[str, int]]] = {}
        for split in self.splits():
            cap = self.cap(split)
            points, graded = [], {}
            for p in points_for(rows, split):
                latest = latest_acc.get((p.name, split))
                if (p.name, split) in states:
                    graded[p.name] = len(states[(p.name, split)])
                    if not graded[p.name] and latest is not None and not self._forced(p.name, split) \
                            and latest.n is not None and latest.n >= cap:
                        graded[p.name] = cap  # evaluated in full earlier, its rows not kept: done
                    elif not graded[p.name]:
                        p = _without_accuracy(p)
                points.append(p)
            for name, target in plan(points, graded, cap, self.ev.options.thresholds).items():
                if (name, split) in states:
                    jobs.setdefault(name, []).append((split, target))
        return [(c, jobs[c.name]) for c in chosen if c.name in jobs]

    def _forced(self, name: str, split: str) -> bool:
        return self.ev.options.force and (name, split) not in self.fresh

    # -- one look -------------------------------------------------------------------
    def look(self, ckpt: CheckpointInfo, jobs: list[tuple[str, int]]) -> bool:
        """Generate ``ckpt``'s next look on each split of ``jobs``, under its claim; False when it
        could not (claimed elsewhere, or failed: then it is left for this call)."""
        if self.ev.under_claim(ckpt, lambda: self._look(ckpt, jobs)):
            return True
        self.left.add(ckpt.name)
        return False

    def _look(self, ckpt: CheckpointInfo, jobs: list[tuple[str, int]]) -> bool:
        ev = self.ev
        ev.check_files(ckpt)
        gen = ev.generator_for(ckpt)
        ev.on_event(Started(EVAL, ckpt.name, text=getattr(gen, "name", "hf")))
        with ev.ctx.models.use(ckpt) if isinstance(gen, HFGenerator) else nullcontext() as model:
            for split, target in jobs:
                self._generate(ckpt, split, target, gen, model)
        ev.on_event(Finished(EVAL, ckpt.name))
        return True

    def _generate(self, ckpt: CheckpointInfo, split: str, target: int, gen, model) -> None:
        ev = self.ev
        state = self.graded(ckpt.name, split)  # again, under the claim
        rows = self.rows(split)
        gradable = [i for i, r in enumerate(rows) if r.get("answer") is not None]
        if not state and not self._forced(ckpt.name, split):
            ev._note_ungradable(ckpt, split, len(gradable))
        todo = [i for i in row_order(gradable) if i not in state][: max(target - len(state), 0)]
        if not todo:
            return
        latest = None if self._forced(ckpt.name, split) else \
            _latest_accs(ev.reader.snapshot()).get((ckpt.name, split))
        samples = list(state.values())
        step = ev.options.batch_size
        for start in range(0, len(todo), step):  # the sidecar after every batch: a kill loses one batch at most
            chunk = todo[start:start + step]
            samples += ev.generate_rows(ckpt, split, [(i, rows[i]) for i in chunk], gen, model)
            samples.sort(key=lambda s: s.idx)
            ev._write_samples(ckpt.name, split, samples)
            self.fresh.add((ckpt.name, split))
        ev._record([ev.acc_record(ckpt.name, split, samples, looks=_looks(latest, len(samples), self.cap(split)),
                                  rows=rows)])


def _sample_ok(s: GenSample) -> bool:
    return (isinstance(s.idx, int) and not isinstance(s.idx, bool) and isinstance(s.correct, bool)
            and isinstance(s.generation, str) and all(v is None or isinstance(v, str) for v in (s.gold, s.extracted)))


def _latest_accs(run: Run) -> dict[tuple[str, str], Metric]:
    """(checkpoint, split) -> its latest accuracy record of overmem's own, in one pass."""
    return {(m.checkpoint, m.split): m for m in run.metrics
            if m.metric == METRIC_ACC and m.aggregate == MEAN and m.probe is None}


def _looks(latest: Metric | None, n: int, cap: int) -> int | None:
    """The look a record of ``n`` rows is: one after the latest record's (a fixed-n record counts
    as one look; at most MAX_LOOKS); None when it only adds grades to a fixed-n evaluation's."""
    if latest is not None and latest.looks is None and n >= cap and (latest.n or 0) >= cap:
        return None
    return min((latest.looks or 1 if latest is not None else 0) + 1, MAX_LOOKS)


def _without_accuracy(p):
    from dataclasses import replace

    return replace(p, acc=None, n=None, grades=None, looks=None)
