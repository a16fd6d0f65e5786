"""Reports: a Figure-1-style plot (matplotlib) and a Markdown/HTML summary of a run."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from overmem.errors import UsageError
from overmem.phases import Phase
from overmem.probes.compare import probe_rows
from overmem.rundir.io import atomic_write_bytes, atomic_write_text
from overmem.summary import Summary
from overmem.table import (MARK_LEGEND, PALETTE, fmt_ppl, markdown_table, merge_lines, phase_of, table_model,
                           trajectory_rows)
from overmem.values import x_of
from overmem.units import pct

SIGNATURE = "overmem report"  # in every report file, so a later report replaces only its own
FORMATS = (".png", ".svg", ".md", ".html")


def _ppl_limits(values: list[float]) -> tuple[float, float]:
    """Y limits that show the rise after the minimum. Leading points far above all
    later ones (epoch 0 of a finetuning, several times the trained ppl) are left off
    the scale, as the paper's Figure 1 does, and marked with their value instead."""
    start = 0
    while start < len(values) - 2:
        rest = values[start + 1:]
        if values[start] <= max(rest) + 2 * (max(rest) - min(rest)):
            break
        start += 1
    low, high = min(values[start:]), max(values[start:])
    pad = (high - low) * 0.08 or abs(low) * 0.05 or 1.0
    return low - pad, high + pad


def figure_bytes(summary: Summary, fmt: str = "png", dpi: int = 100) -> bytes:
    """Perplexity and accuracy against epoch, one panel per split, background by phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    advice = summary.advice
    rows = trajectory_rows(summary)
    merges = [r for r in summary.rows if r.checkpoint.is_merge]
    splits = [s for s in summary.splits if any(r.get(s).ppl is not None or r.get(s).acc is not None for r in rows)]
    splits = splits or [None]
    height = 3.2 * len(splits)
    fig, axes = plt.subplots(len(splits), 1, figsize=(10, height), squeeze=False)
    xs = [x_of(r) for r in rows]
    shown: dict[str, None] = {}
    legend: dict[str, object] = {}
    for ax, split in zip(axes[:, 0], splits):
        for i, r in enumerate(rows):
            phase = phase_of(summary, r.name)
            shown[phase] = None
            left = (xs[i - 1] + xs[i]) / 2 if i else xs[i] - 0.5
            right = (xs[i] + xs[i + 1]) / 2 if i + 1 < len(xs) else xs[i] + 0.5
            ax.axvspan(left, right, color=PALETTE[phase], alpha=0.25, lw=0)
        ahead = summary.forecast
        if ahead is not None and ahead.onset is not None and xs:
            far = xs[-1] + (xs[-1] - xs[0])  # the axis reaches at most twice as far as the data
            ax.axvspan(ahead.low, min(ahead.high if ahead.high is not None else far, far), color=PALETTE["purple"],
                       alpha=0.12, hatch="//", lw=0, label=ahead.describe())
        if split is None:
            continue
        ppl = [(x, r.get(split).ppl) for x, r in zip(xs, rows) if r.get(split).ppl is not None]
        acc = [(x, pct(r.get(split).acc)) for x, r in zip(xs, rows) if r.get(split).acc is not None]
        ax.set_title(f"{split}", loc="left", fontsize=10)
        ax.set_xlabel("epoch" if rows and rows[0].checkpoint.epoch is not None else "step")
        if ppl:
            ax.plot(*zip(*ppl), "-o", color="#1f3a93", ms=4, label="perplexity", clip_on=True)
            ax.set_ylabel("perplexity", color="#1f3a93")
            limits = _ppl_limits([y for _, y in ppl])
            ax.set_ylim(*limits)
            for x, y in ppl:
                if y > limits[1]:
                    ax.annotate(f"{y:.3g}\u2191", (x, limits[1]), xytext=(2, -10), textcoords="offset points",
                                fontsize=7, color="#1f3a93")
        ax2 = ax.twinx()
        if acc:
            ax2.plot(*zip(*acc), "-s", color="#117a65", ms=4, label="accuracy")
            ax2.set_ylabel("accuracy %", color="#117a65")
            ax2.set_ylim(-3, 103)
        for r in rows:
            if r.name == advice.recommended and r.get(split).ppl is not None:
                ax.plot([x_of(r)], [r.get(split).ppl], marker="*", color="#d4ac0d", ms=16, mec="black",
                        label=f"recommended {r.name}", ls="")
        for m in merges:
            v = m.get(split)
            name = f"{m.name} (recommended)" if m.name == advice.recommended else m.name
            if v.ppl is not None:
                ax.axhline(v.ppl, color="#1f3a93", ls="--", lw=1, label=f"{name} ppl")
            if v.acc is not None:
                ax2.axhline(pct(v.acc), color="#117a65", ls=":", lw=1, label=f"{name} accuracy")
        for a in (ax, ax2):
            for handle, label in zip(*a.get_legend_handles_labels()):
                legend.setdefault(label, handle)
    for phase in shown:
        legend[f"{phase} ({Phase(phase).meaning})"] = Patch(color=PALETTE[phase], alpha=0.35)
    fig.suptitle(f"{summary.run.name}: perplexity of the reference solutions and accuracy per checkpoint",
                 fontsize=10, y=1 - 0.12 / height)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="upper center", ncol=min(len(legend), 4),
                   fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1 - 0.25 / height))
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.3 + 0.17 * -(-len(legend) // 4)) / height))
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, metadata={"Software" if fmt == "png" else "Creator": SIGNATURE})
    plt.close(fig)
    return buf.getvalue()


def merge_results(summary: Summary) -> list[str]:
    """One line per evaluated merge: its numbers against its parents' on the driving and test splits."""
    return [line for r in summary.rows if r.checkpoint.is_merge
            for line in merge_lines(summary, r.name, list(r.checkpoint.parents))]


def markdown(summary: Summary, figure: str | None = None) -> str:
    advice, run = summary.advice, summary.run
    out = [f"# {SIGNATURE}: {run.name}", ""]
    if run.info:
        m = run.info.method
        out.append(f"base `{run.info.base_model.get('id')}` · method {m.get('name')} · loss {run.info.loss} · "
                   f"lr {run.info.hyperparameters.get('lr')} · status {run.info.status}")
        out.append("")
    if figure:
        out += [f"![test perplexity and accuracy by phase]({figure})", ""]
    out += [f"## Recommendation: {advice.recommended or 'none'}", ""]
    out += [f"- {r}" for r in advice.reasons]
    out += [f"- **warning**: {w}" for w in advice.warnings]
    t = advice.thresholds
    out += ["", f"Phases on **{advice.split}**; thresholds: {t.describe()}.", ""]
    model = table_model(summary)
    out += ["## Checkpoints", "", f"ppl: {summary.ppl_label}; {MARK_LEGEND}", ""] + markdown_table(model)
    merges = merge_results(summary)
    if merges:
        out += ["", "## Merge", ""] + [f"- {line}" for line in merges]
    names = [r.name for r in summary.rows if any(m.probe and m.checkpoint == r.name for m in run.metrics)]
    rows = probe_rows(run, names) if names else []
    if rows:
        out += ["", "## Probes", "", "| probe | metric | " + " | ".join(names) + " | better |",
                "|" + "---|" * (len(names) + 3)]
        for row in rows:
            best = row.best()
            vals = [("**" + fmt_ppl(row.values[n]) + "**") if n == best else fmt_ppl(row.values[n]) for n in names]
            out.append(f"| {row.probe} | {row.metric} | " + " | ".join(vals) + f" | {row.better or ''} |")
    return "\n".join(out) + "\n"


def html_report(summary: Summary) -> str:
    """The Markdown report rendered to one self-contained HTML page (the figure inlined as a
    PNG data URI). Raw HTML in the Markdown is escaped, not passed through: run names,
    model ids and reasons come from files."""
    from markdown_it import MarkdownIt  # deferred: only the HTML report needs it

    png = base64.b64encode(figure_bytes(summary, "png")).decode()
    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    text = renderer.render(markdown(summary, f"data:image/png;base64,{png}"))
    style = ("body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}"
             "th,td{padding:2px 8px;border-bottom:1px solid #ddd}th{text-align:left}")
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>{text}</body></html>"


def _check_replaceable(paths: list[Path]) -> None:
    """A report replaces only an earlier report: a file whose format carries overmem's signature
    where overmem writes it (the Markdown title, the HTML heading, the PNG's Software text, the
    SVG's creator), not a file that merely mentions it."""
    for path in paths:
        if path.is_symlink() or path.exists() and not (path.is_file() and _signed(path)):
            raise UsageError(f"--out: {path} exists and is not a report overmem wrote; remove it yourself or choose "
                             "another --out")


def _signed(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(65536)
    sign = SIGNATURE.encode()
    return {".md": head.startswith(b"# " + sign + b": "),
            ".html": head.startswith(b"<!doctype html>") and b"<h1>" + sign + b": " in head,
            ".png": head.startswith(b"\x89PNG") and b"tEXtSoftware\x00" + sign in head,
            ".svg": head.startswith(b"<?xml") and b"<dc:creator>" in head and b"<dc:title>" + sign + b"</dc:title>" in head,
            }.get(path.suffix.lower(), False)


def write_report(summary: Summary, out: Path) -> list[Path]:
    """Write the report in the format of ``out``'s suffix; Markdown also writes its PNG figure.
    An existing file is replaced only when it is an earlier report of overmem's."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"--out must end with one of {', '.join(FORMATS)}")
    _check_replaceable([out] if suffix != ".md" else [out, out.with_suffix(".png")])
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".png", ".svg"):
        atomic_write_bytes(out, figure_bytes(summary, suffix[1:]))
        return [out]
    if suffix == ".html":
        atomic_write_text(out, html_report(summary))
        return [out]
    png = out.with_suffix(".png")
    atomic_write_bytes(png, figure_bytes(summary, "png"))
    atomic_write_text(out, markdown(summary, png.name))
    return [out, png]
