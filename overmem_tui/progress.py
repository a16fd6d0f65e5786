"""Rich progress displays for long-running core jobs (training, evaluation, probes, merging):
each turns the typed events of overmem.progress into bars and lines."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from overmem.progress import PROBE, Advanced, Event, Failed, Note, Saved, Skipped, Started, Stepped
from overmem.rundir.names import printable
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def training_progress() -> Progress:
    return Progress(
        TextColumn("[bold]train[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epoch {task.fields[epoch]:.2f}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[rate]} tok/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def stop(progress: Progress) -> None:
    """Stop a display that was started (with its first bar): one that never showed a bar leaves
    no empty line behind, so an error that ends the job before any work is the only line."""
    if progress.live.is_started:
        progress.stop()


def add_task(progress: Progress, *args, **kwargs) -> int:
    """A new bar, starting the display with the first one."""
    if not progress.live.is_started:
        progress.start()
    return progress.add_task(*args, **kwargs)


class TrainDisplay:
    """Turns a training's events into a progress bar and printed notes."""

    def __init__(self) -> None:
        self.progress = training_progress()
        self.task = None

    def __enter__(self) -> "TrainDisplay":
        return self

    def __exit__(self, *exc) -> None:
        stop(self.progress)

    def __call__(self, event: Event) -> None:
        match event:
            case Started():
                self.progress.console.print(f"[dim]{event.text}[/]")
                self.task = add_task(self.progress, "train", total=event.total, completed=event.done,
                                     epoch=0.0, loss="-", rate="-")
            case Stepped() if self.task is not None:
                self.progress.update(self.task, completed=event.done, epoch=event.epoch, loss=f"{event.loss:.4f}",
                                     rate=f"{event.tokens_per_s:,.0f}")
            case Saved():
                self.progress.console.print(f"saved checkpoint [bold]{event.subject}[/] (step {event.step})")
            case Note():
                self.progress.console.print(f"[yellow]note:[/] {escape(printable(event.text))}")


class EvalDisplay:
    """Turns an evaluation's (or a probe run's) events into one bar per (checkpoint, split, part)."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.console = Console()
        self.tasks: dict[tuple, int] = {}

    def __enter__(self) -> "EvalDisplay":
        return self

    def __exit__(self, *exc) -> None:
        stop(self.progress)

    def __call__(self, event: Event) -> None:
        match event:
            case Advanced():
                key = (event.subject, event.split, event.part)
                if key not in self.tasks:
                    self.tasks[key] = add_task(self.progress, " ".join(key), total=event.total)
                self.progress.update(self.tasks[key], completed=event.done)
            case Note() | Skipped():
                self.progress.console.print(f"[yellow]{event.subject}:[/] {escape(printable(event.text))}")
            case Failed():
                self.progress.console.print(f"[red]{event.subject} failed:[/] {escape(printable(event.text))}")
            case Started() if event.job == PROBE:
                self.progress.console.print(f"[dim]probing {event.subject}: {event.text}[/]")


class MergeDisplay:
    """A progress bar over tensors with bytes/s (full form) or modules (adapter form)."""

    def __init__(self, form: str) -> None:
        from rich.progress import DownloadColumn, TransferSpeedColumn

        columns = [TextColumn("[bold]merge"), BarColumn()]
        columns += [DownloadColumn(), TransferSpeedColumn()] if form == "full" else [MofNCompleteColumn()]
        columns += [TimeElapsedColumn(), TextColumn("{task.fields[name]}")]
        self.progress = Progress(*columns, console=console)
        self.task = None

    def __enter__(self) -> "MergeDisplay":
        return self

    def __exit__(self, *exc) -> None:
        stop(self.progress)

    def __call__(self, event: Event) -> None:
        if isinstance(event, Advanced):
            if self.task is None:
                self.task = add_task(self.progress, "merge", total=event.total, name="")
            self.progress.update(self.task, completed=event.done, name=event.subject)
