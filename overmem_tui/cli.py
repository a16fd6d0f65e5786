"""The overmem command line: a thin Typer app over core.

Errors: core raises OvermemError subclasses; ``OvermemGroup.invoke`` is the one
place that turns them (and OS errors) into one stderr line and an exit code.
``OVERMEM_DEBUG=1`` shows the traceback instead. Command modules import nothing
heavy at module level, so ``overmem --help`` starts fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from overmem import __version__
from overmem.errors import OvermemError
from overmem_tui import signals


def _debug() -> bool:
    return os.environ.get("OVERMEM_DEBUG", "") not in ("", "0")


def report_error(message: str, code: int) -> None:
    from overmem.rundir.names import printable

    text = printable(" ".join(str(message).split()))
    typer.echo(f"overmem: error: {text}", err=True)
    sys.exit(code)


def _typer_flow() -> tuple[type[BaseException], ...]:
    """What typer itself turns into help, usage errors and exit codes: recent typer vendors
    click (its own Exit, Abort and TyperException-based usage errors), older typer used
    click's."""
    kinds: list[type[BaseException]] = [SystemExit, typer.Exit, typer.Abort]
    try:
        from typer.exceptions import TyperException

        kinds.append(TyperException)
    except ImportError:
        pass
    try:
        import click

        kinds += [click.exceptions.Exit, click.exceptions.Abort, click.ClickException]
    except ImportError:
        pass
    return tuple(kinds)


TYPER_FLOW = _typer_flow()


class OvermemGroup(TyperGroup):
    def invoke(self, ctx: typer.Context):
        signals.reset()
        try:
            return super().invoke(ctx)
        except OvermemError as exc:
            if _debug():
                raise
            report_error(str(exc), exc.exit_code)
        except OSError as exc:
            if _debug():
                raise
            report_error(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 1)
        except KeyboardInterrupt:
            if signals.is_committed():  # the job finished and is written: only its last words were cut
                sys.exit(0)
            report_error("interrupted", 130)
        except TYPER_FLOW:
            raise
        except Exception as exc:  # a bug, not bad input: still one line, the traceback on request
            if _debug():
                raise
            report_error(f"unexpected {type(exc).__name__}: {exc} (OVERMEM_DEBUG=1 shows the traceback; "
                         "please report it)", 1)


app = typer.Typer(
    name="overmem",
    cls=OvermemGroup,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Checkpoint advisor for LLM finetuning: find over-memorized checkpoints, pick and merge the good ones.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"overmem {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = None,
) -> None:
    """overmem: checkpoint advisor for LLM finetuning."""


def _register() -> None:
    from overmem_tui.commands import demo, evaluate, merge, probe, recommend, report, select, train, watch

    for module in (demo, train, evaluate, watch, recommend, merge, probe, report, select):
        module.register(app)


_register()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # between the command and the exit
        sys.exit(0 if signals.is_committed() else 130)


if __name__ == "__main__":
    main()
