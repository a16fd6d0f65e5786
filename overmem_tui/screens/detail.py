"""One checkpoint in depth: every metric, the worst samples by NLL, a per-sample ppl histogram."""

from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from overmem.table import fmt_ppl, phase_of
from overmem_tui.render import phase_badge
from overmem_tui.state import RunView
from overmem_tui.workers import WorkerOutcomes

WORST = 5
BINS = 10


def histogram(values: list[float], bins: int = BINS, width: int = 40) -> list[str]:
    if not values:
        return ["no per-sample values"]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        return [f"{lo:8.4g} | {'█' * width} {len(values)}"]
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / (hi - lo) * bins))] += 1
    top = max(counts)
    return [f"{lo + (hi - lo) * k / bins:8.4g} | {'█' * round(c / top * width):<{width}} {c}"
            for k, c in enumerate(counts)]


def load_detail(view: RunView, name: str) -> dict:
    """Read the sidecars of one checkpoint (runs in a worker: file I/O)."""
    from overmem.rundir.writer import SPLITS_SIDECAR
    from overmem.rundir.sources import run_dir_for
    from overmem.rundir.samples import ROWS, GenSample, PplSample

    rd = run_dir_for(view.run.path)
    out = {}
    for split in view.summary.splits if view.summary else ():
        rows = {r["idx"]: r for r in rd.read_sidecar(SPLITS_SIDECAR, split, ROWS)}
        ppl = rd.read_samples(name, split, PplSample)
        gen = {g.idx: g for g in rd.read_samples(name, split, GenSample)}
        out[split] = {"rows": rows, "ppl": ppl, "gen": gen}
    return out


class DetailScreen(WorkerOutcomes, Screen):
    BINDINGS = [Binding("escape,q", "app.pop_screen", "back")]

    def __init__(self, view: RunView, name: str) -> None:
        super().__init__()
        self.view = view
        self.checkpoint = name

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail-body"):
            yield Static(self._metrics(), id="detail-metrics")
            yield Static("reading samples...", id="detail-samples")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def load(self) -> dict:
        return load_detail(self.view, self.checkpoint)

    def worker_done(self, name: str, data: dict) -> None:
        self._show_samples(data)

    def worker_failed(self, name: str, line: str) -> None:  # unreadable sidecars: say so, keep the screen
        self.query_one("#detail-samples", Static).update(Text(f"cannot read the samples: {line}"))

    def _metrics(self) -> Group:
        summary = self.view.summary
        run = self.view.run
        ckpt = run.checkpoint(self.checkpoint)
        head = Text(f"{self.checkpoint}  ", style="bold")
        head.append_text(phase_badge(phase_of(summary, self.checkpoint)))
        verdict = summary.advice.phases.of(self.checkpoint)
        lines = [head]
        if ckpt is not None:
            lines.append(Text(f"kind {ckpt.kind}  epoch {ckpt.epoch}  step {ckpt.step}"
                              + (f"  parents {'+'.join(ckpt.parents)} weights {list(ckpt.weights)}" if ckpt.parents
                                 else "") + (f"  path {ckpt.path}" if ckpt.path else ""), style="dim"))
        if verdict:
            lines.append(Text(f"why: {verdict.reason}"))
        table = Table(title="all metrics", title_justify="left")
        for col in ("split/probe", "metric", "aggregate", "value", "n"):
            table.add_column(col)
        for m in sorted((m for m in run.metrics if m.checkpoint == self.checkpoint),
                        key=lambda m: (m.probe or "", m.split, m.metric, m.aggregate)):
            where = f"{m.probe}:{m.split}" if m.probe else m.split
            table.add_row(where, m.metric, m.aggregate, f"{m.value:.5g}", str(m.n or ""))
        lines.append(table)
        return Group(*lines)

    def _show_samples(self, data: dict) -> None:
        parts = []
        driving = self.view.summary.split
        for split, d in data.items():
            if not d["ppl"]:
                continue
            scored = [(r.nll_sum / r.n_tokens, r) for r in d["ppl"] if r.n_tokens]
            scored.sort(key=lambda item: -item[0])
            table = Table(title=f"{split}: worst {WORST} samples by NLL per token", title_justify="left",
                          show_lines=True)
            table.add_column("#", justify="right")
            table.add_column("ppl", justify="right")
            table.add_column("reference")
            table.add_column("generation")
            for nll, r in scored[:WORST]:
                row = d["rows"].get(r.idx, {})
                gen = d["gen"].get(r.idx)
                gen_text = Text(gen.generation[:300] if gen else "-",
                                style="green" if gen and gen.correct else "red" if gen else "")
                table.add_row(str(r.idx), fmt_ppl(math.exp(nll)), str(row.get("response", ""))[:300], gen_text)
            parts.append(table)
            if split == driving or len(data) == 1:
                values = [math.exp(n) for n, _ in scored]
                parts.append(Text(f"{split}: per-sample ppl histogram (n={len(values)})", style="bold"))
                parts.extend(Text(line) for line in histogram(values))
        if not parts:
            parts = [Text("no per-sample sidecars for this checkpoint yet (overmem eval writes them)")]
        self.query_one("#detail-samples", Static).update(Group(*parts))
