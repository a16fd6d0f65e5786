"""`overmem recommend` and `overmem select` through Typer's runner: output and every error path."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from overmem.rundir import RunDir, RunInfo
from overmem_tui.cli import app
from tests.helpers import run_cli

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_and_version():
    result = invoke("--help")
    assert result.exit_code == 0 and "recommend" in result.output
    assert invoke("--version").output.strip() == "overmem 0.1.0"
    assert invoke().exit_code in (0, 2)  # no_args_is_help prints help
    assert "Usage" in invoke().output


@pytest.mark.parametrize("command", ["train", "eval", "watch", "recommend", "merge", "probe", "report", "select",
                                     "demo"])
def test_each_command_help_and_a_mistyped_option(command):
    """The real entry point: --help is help (exit 0), a mistyped option is a usage error
    (exit 2), never an "unexpected" error (typer's own exceptions pass through)."""
    helped = run_cli(command, "--help")
    assert helped.returncode == 0 and f" {command} [OPTIONS]" in helped.stdout
    assert "error" not in helped.stderr
    wrong = run_cli(command, "--no-such-option")
    assert wrong.returncode == 2 and "No such option" in wrong.stderr + wrong.stdout
    assert "unexpected" not in wrong.stderr + wrong.stdout


def test_recommend_table_and_json(paper_run):
    result = invoke("recommend", paper_run)
    assert result.exit_code == 0, result.output
    assert "recommended: ep5" in result.output and "merge: ep5 + ep10" in result.output
    result = invoke("recommend", paper_run, "--json", "--split", "test", "--band", "1.0")
    obj = json.loads(result.output)
    assert obj["split"] == "test" and obj["recommended"] == "ep3"
    assert obj["thresholds"]["band"] == 1.0


def test_recommend_defaults_to_current_directory(paper_run, monkeypatch):
    monkeypatch.chdir(paper_run)
    assert json.loads(invoke("recommend", "--json").output)["recommended"] == "ep5"


def _error(result):
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    return lines[0]


def test_error_missing_dir(tmp_path):
    line = _error(invoke("recommend", tmp_path / "nope"))
    assert line.startswith("overmem: error:") and "no such directory" in line


def test_error_not_a_run(tmp_path):
    assert "neither an overmem run" in _error(invoke("recommend", tmp_path))


def test_error_empty_run(tmp_path):
    RunDir(tmp_path / "r").create(RunInfo(status="running", base_model={"id": "m"}))
    result = invoke("recommend", tmp_path / "r")
    assert "no evaluated metrics yet" in _error(result)
    assert result.exit_code == 3


def test_error_unknown_split(paper_run):
    result = invoke("recommend", paper_run, "--split", "gsm8k")
    assert "split 'gsm8k' has no metrics in this run (splits: train, val, test)" in _error(result)
    assert result.exit_code == 2


def test_error_non_numeric_value(paper_run):
    with open(paper_run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"type": "metric", "checkpoint": "ep10", "split": "val",
                             "metric": "ppl", "value": "high"}) + "\n")
    result = invoke("recommend", paper_run)
    line = _error(result)
    assert "metrics.jsonl:67: checkpoint ep10, split val: ppl 'high' is not a number" in line
    assert result.exit_code == 3
    assert "recommended:" in result.stdout and "ppl 'high' is not a number" in result.stdout  # said, not ranked


def test_error_bad_threshold(paper_run):
    assert "ppl factor must be above 1" in _error(invoke("recommend", paper_run, "--ppl-factor", "0.5"))


def test_torn_last_line_is_tolerated(paper_run):
    with open(paper_run / "metrics.jsonl", "a") as fh:
        fh.write('{"type": "metric", "checkpoint": "ep10", "split": "val", "metric": "ppl", "val')
    result = invoke("recommend", paper_run, "--json")
    assert result.exit_code == 0
    assert json.loads(result.output)["recommended"] == "ep5"


def test_debug_env_shows_the_traceback(tmp_path):
    plain = run_cli("recommend", tmp_path / "nope")
    assert plain.returncode == 2 and plain.stderr.count("\n") == 1
    debug = run_cli("recommend", tmp_path / "nope", env={"OVERMEM_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_select_records_and_exports(paper_run, tmp_path):
    (paper_run / "checkpoints" / "ep3" / "adapter_model.safetensors").write_bytes(b"weights")
    result = invoke("select", paper_run, "ep3", "--export", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert json.loads((paper_run / "selection.json").read_text())["checkpoint"] == "ep3"
    assert "exists" in _error(invoke("select", paper_run, "ep4", "--export", tmp_path / "out"))
    assert (tmp_path / "out" / "adapter_model.safetensors").read_bytes() == b"weights"  # nothing lost
    assert invoke("select", paper_run, "ep4", "--export", tmp_path / "out", "--force").exit_code == 0
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()
    assert "no checkpoint 'ep99'" in _error(invoke("select", paper_run, "ep99"))
    result = invoke("select", paper_run, "ep5", "--export", tmp_path / "link", "--link")
    assert result.exit_code == 0 and (tmp_path / "link").is_symlink()


def test_name_path_options_are_parsed_once_for_every_command():
    from overmem.errors import UsageError
    from overmem_tui.options import name_paths

    assert name_paths(["a=x.jsonl", "b=dir/y.csv"], "--ood") == {"a": "x.jsonl", "b": "dir/y.csv"}
    assert name_paths(None, "--ood") == {}
    with pytest.raises(UsageError, match="--split-file expects NAME=PATH, got 'oops'"):
        name_paths(["oops"], "--split-file")
