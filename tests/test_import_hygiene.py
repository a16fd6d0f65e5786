"""Dependencies point one way (core never imports the UI libraries) and heavy imports are
deferred (--help, watch and recommend never import torch)."""

from __future__ import annotations

import json
import pkgutil
from pathlib import Path
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
    assert "overmem.rundir.reader" in names and "overmem.phases" in names and "overmem.callback" in names
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


@pytest.mark.slow
def test_a_users_own_core_package_never_shadows_overmem(tmp_path):
    """Research code often has a top-level ``core`` package; overmem installs as ``overmem``."""
    user = tmp_path / "project"
    (user / "core").mkdir(parents=True)
    (user / "core" / "__init__.py").write_text("MINE = True\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(user)}

    def run(*args: str, timeout: float = 300):
        done = subprocess.run([sys.executable, *args], cwd=user, capture_output=True, text=True, env=env,
                              timeout=timeout)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    out = run("-c", "from overmem.callback import OvermemCallback; import core; print(core.MINE, "
                    "OvermemCallback.__module__)").stdout.split()
    assert out == ["True", "overmem.callback"]
    config = json.loads(run("-c", (
        "import json\n"
        "from overmem.training.setup import DataOptions, build_config\n"
        f"cfg = build_config(model='tiny', data=DataOptions('synthetic-math', train_size=8, eval_size=2), "
        f"out={str(user / 'run')!r}, method='lora', r=4, alpha=8, epochs=1, batch_size=8, micro_batch_size=8, "
        "max_len=256)\n"
        "print(json.dumps(cfg.to_json()))")).stdout)
    (user / "cfg.json").write_text(json.dumps(config))
    run("-m", "overmem.training", "cfg.json")  # what overmem demo starts
    run("-m", "overmem.evaluation", "run", json.dumps({"backend": "hf", "max_new_tokens": 4, "metrics": ["ppl"]}))
    assert (user / "run" / "checkpoints" / "ep1").is_dir() and (user / "run" / "metrics.jsonl").is_file()
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run([str(torchrun), "--nproc-per-node", "1", "--standalone", "-m", "overmem_tui.cli", "train", "--model",
                           "tiny", "--data", "synthetic-math", "--out", "run2", "--method", "lora", "--rank", "4",
                           "--alpha", "8", "--epochs", "1", "--batch-size", "8", "--train-size", "8",
                           "--eval-size", "2"], cwd=user, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (user / "run2" / "checkpoints" / "ep1").is_dir()

