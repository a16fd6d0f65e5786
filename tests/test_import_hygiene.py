"""Dependencies point one way and heavy imports are deferred (STYLE.md 1, 7)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import overmem
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


GUARD = """
import sys
BANNED = {"textual", "typer", "rich"}
violations = []

class Guard:
    # Records who imports a banned package: the first frame outside the import machinery.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BANNED:
            frame = sys._getframe(1)
            while frame and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen")):
                frame = frame.f_back
            importer = frame.f_globals.get("__name__", "") if frame else ""
            if importer == "overmem" or importer.startswith("overmem."):
                violations.append((importer, name))
        return None

sys.meta_path.insert(0, Guard())
"""


def test_core_never_imports_ui_libraries():
    """core's own code never imports textual, typer or rich (third-party libraries it uses
    may: transformers pulls scikit-learn, which pulls rich)."""
    names = [m.name for m in pkgutil.walk_packages(overmem.__path__, "overmem.")]
    assert "overmem.rundir.reader" in names and "overmem.phases" in names and "overmem.evaluation.callback" in names
    code = GUARD + "import importlib\n" + "\n".join(f"importlib.import_module({n!r})" for n in names)
    code += "\nimport json; print(json.dumps(violations))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    # and the guard does catch a direct import
    probe = subprocess.run([sys.executable, "-c", GUARD + "import types, sys\n"
                            "m = types.ModuleType('overmem.fake'); exec('import rich', m.__dict__)\n"
                            "print(len(violations))"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert probe.stdout.strip() == "1"


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
