"""Dependencies point one way and heavy imports are deferred (STYLE.md 1, 7)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import core
import pytest

from tests.helpers import ROOT


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_core_never_imports_ui_libraries():
    names = [m.name for m in pkgutil.walk_packages(core.__path__, "core.")]
    assert "core.rundir.reader" in names and "core.phases" in names
    code = "import importlib\n" + "\n".join(f"importlib.import_module({n!r})" for n in names)
    loaded = _top(_modules_after(code))
    assert not loaded & {"textual", "typer", "rich"}, loaded & {"textual", "typer", "rich"}


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["recommend", "tests/data/paper_run"], ["recommend", "tests/data/paper_run", "--json"]],
)
def test_cli_paths_do_not_import_torch(argv):
    code = (
        "import sys\n"
        f"sys.argv = ['overmem'] + {argv!r}\n"
        "from overmem_tui.cli import app\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
    )
    loaded = _top(_modules_after(code))
    assert "typer" in loaded  # the check really ran the CLI
    assert not loaded & {"torch", "transformers", "peft", "vllm", "datasets"}
