"""Fuzzing what other programs write: safetensors headers and metrics.jsonl records.

Seeded generators (reproducible on any machine): every outcome is either an exact read
or one clean overmem error, never another exception and never a silently wrong value.
"""

from __future__ import annotations

import json
import math
import random
import struct
from pathlib import Path

import pytest

from overmem.errors import CorruptFile

N_HEADERS = 1200
N_RECORD_RUNS = 40


# ---------------------------------------------------------------------------------
# safetensors headers
# ---------------------------------------------------------------------------------

def _real_file(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file({"embed.weight": torch.randn(6, 4), "layer.bias": torch.randn(5, dtype=torch.bfloat16),
               "layer.weight": torch.randn(3, 2, dtype=torch.float16), "steps": torch.arange(3, dtype=torch.int64),
               "mask": torch.tensor([True, False]), "empty": torch.zeros(0, 3)},
              str(path), metadata={"format": "pt"})
    return path


def _split(raw: bytes) -> tuple[dict, bytes]:
    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + size]), raw[8 + size:]


def _pack(header, data: bytes, *, pad: bool = True, size_delta: int = 0) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text) + size_delta) + text + data


ODD_VALUES = [None, True, -1, 0, 1, 2**64, 1.5, "x", "", [], [1], [0, 0], [5, 3], {}, {"a": 1}, "F32", "BF16",
              "X99", float("nan"), [1, 2, 3], [-1, 4], [0, 1e3]]


def _mutate(header: dict, data: bytes, rng: random.Random) -> bytes:
    """One random corruption (or none) of a real header and its data."""
    h = json.loads(json.dumps(header))
    names = [k for k in h if k != "__metadata__"]
    kind = rng.randrange(14)
    name = rng.choice(names)
    if kind == 0:
        h[name][rng.choice(["dtype", "shape", "data_offsets"])] = rng.choice(ODD_VALUES)
    elif kind == 1:
        del h[name][rng.choice(["dtype", "shape", "data_offsets"])]
    elif kind == 2:  # shift one offset
        i = rng.randrange(2)
        h[name]["data_offsets"][i] += rng.choice([-8, -4, -2, -1, 1, 2, 4, 8])
    elif kind == 3:  # swap two tensors' offsets
        other = rng.choice(names)
        h[name]["data_offsets"], h[other]["data_offsets"] = h[other]["data_offsets"], h[name]["data_offsets"]
    elif kind == 4:  # another dtype of the same or another size
        h[name]["dtype"] = rng.choice(["F32", "F16", "BF16", "I64", "I32", "U8", "BOOL", "F64", "I8", "F8_E4M3"])
    elif kind == 5:  # another shape
        h[name]["shape"] = [rng.randrange(0, 8) for _ in range(rng.randrange(0, 3))]
    elif kind == 6:
        return _pack(h, data[: max(0, len(data) - rng.randrange(1, 16))])  # data cut short
    elif kind == 7:
        return _pack(h, data + bytes(rng.randrange(1, 16)))  # extra bytes after the data
    elif kind == 8:
        return _pack(h, data, size_delta=rng.choice([-3, 1, 7, 10**9, 2**40]))  # a lying header size
    elif kind == 9:
        text = json.dumps(h).encode()
        cut = rng.randrange(len(text))
        return _pack(text[:cut] + bytes([rng.randrange(256)]) + text[cut + 1:], data)  # a flipped byte
    elif kind == 10:
        h = rng.choice([[h], "header", 3, None, {"__metadata__": {"a": 1}}])
    elif kind == 11:  # a tensor added that claims bytes nobody has
        h["ghost"] = {"dtype": "F32", "shape": [2], "data_offsets": [len(data), len(data) + 8]}
    elif kind == 12:  # offsets all at zero (overlapping)
        for k in names:
            begin, end = h[k]["data_offsets"]
            h[k]["data_offsets"] = [0, end - begin]
    # kind 13: unchanged (a valid file read exactly)
    return _pack(h, data, pad=rng.random() < 0.8)


def _library_read(path: Path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {name: fh.get_tensor(name) for name in fh.keys()}


def test_fuzzed_safetensors_headers_read_exactly_or_fail_cleanly(tmp_path):
    import torch

    from overmem.merging.safetensors_io import TensorReader

    header, data = _split(_real_file(tmp_path / "real.safetensors").read_bytes())
    rng = random.Random(20)
    read = refused = 0
    folder = tmp_path / "case"
    folder.mkdir()
    target = folder / "model.safetensors"
    for i in range(N_HEADERS):
        target.write_bytes(_mutate(header, data, rng))
        try:
            reader = TensorReader(folder)
            ours = {name: reader.get(name) for name in reader.names()}
        except CorruptFile as exc:
            assert str(target) in str(exc), (i, str(exc))
            refused += 1
            continue
        except Exception as exc:  # anything else is a bug
            pytest.fail(f"case {i}: {type(exc).__name__}: {exc}")
        theirs = _library_read(target)  # what we accept, the reference library reads too
        assert set(ours) == set(theirs), i
        for name, tensor in theirs.items():
            assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape, (i, name)
            assert torch.equal(ours[name].view(torch.uint8) if tensor.numel() else ours[name],
                               tensor.view(torch.uint8) if tensor.numel() else tensor), (i, name)
        read += 1
    print(f"{read} read exactly, {refused} refused")
    assert read >= 50 and refused >= 800, (read, refused)  # both outcomes really happened


# ---------------------------------------------------------------------------------
# metrics.jsonl records
# ---------------------------------------------------------------------------------

WEIRD = [None, True, False, 0, -1, 1, 0.5, 1.5, 2.0, -3.0, 100, 250, 1e308, "1e400", "NaN", "Infinity",
         "-Infinity", "x", "", "../x", ".hidden", [], [1], {}, {"a": 1}, 10**30]


def _value_text(value) -> str:
    """A JSON value as a writer might have put it (NaN/Infinity literals and 1e400 included)."""
    if value in ("1e400", "NaN", "Infinity", "-Infinity"):
        return value
    return json.dumps(value)


def _random_record(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return rng.choice(["not json", "[]", "3", '"text"', "{", '{"type": "mystery"}', "{}", "null"])
    record = {"type": rng.choice(["metric", "metric", "metric", "train", "resume", None]),
              "checkpoint": rng.choice(["ep0", "ep1", "ep2", "ep3", "merge-ep1+ep3", "../x", "", None, 3]),
              "split": rng.choice(["val", "test", "train", "validation", "../etc", None, 5]),
              "metric": rng.choice(["ppl", "acc", "ppl", "acc", "trainer/accuracy", "ece", None, ""]),
              "aggregate": rng.choice(["mean", "token", "", None, 3]),
              "n": rng.choice([100, 400, None, -1, 1.5, "x", True]),
              "time": rng.choice([1.0, None, "x", [1]]),
              "step": rng.choice([1, 2, 5, -1, None, "x", 2.5]), "epoch": rng.choice([1.0, None, "x"]),
              "loss": rng.choice([1.0, 0.5, None]), "lr": rng.choice([1e-4, None])}
    for key in list(record):
        if rng.random() < 0.1:
            del record[key]
    parts = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in record.items() if v is not None or rng.random() < 0.5]
    if rng.random() < 0.9:
        good = rng.choice([1.2, 3.0, 9.0, 0.7, 0.0, 1.0, 0.95])
        value = good if rng.random() < 0.6 else rng.choice(WEIRD)
        parts.append(f'"value": {_value_text(value)}')
    return "{" + ", ".join(parts) + "}"


def _fuzzed_run(tmp_path: Path, rng: random.Random, index: int, extra: int | None = None) -> Path:
    from overmem.rundir import CheckpointInfo, RunDir, RunInfo

    rd = RunDir(tmp_path / f"run{index}")
    rd.create(RunInfo(status="finished", base_model={"id": "tiny", "path": None}))
    for i in (1, 2, 3):
        with rd.stage_checkpoint(CheckpointInfo(f"ep{i}", "adapter", epoch=float(i), step=i)):
            pass
    good = []
    for i, (ppl, acc) in enumerate([(9.0, 0.0), (2.0, 0.8), (1.9, 0.85), (3.5, 0.86)]):
        good += [json.dumps({"type": "metric", "checkpoint": f"ep{i}", "split": "val", "metric": "ppl",
                             "aggregate": "mean", "value": ppl, "n": 100}),
                 json.dumps({"type": "metric", "checkpoint": f"ep{i}", "split": "val", "metric": "acc",
                             "aggregate": "mean", "value": acc, "n": 100})]
    extra = rng.randrange(5, 40) if extra is None else extra
    lines = good + [_random_record(rng) for _ in range(extra)]
    rng.shuffle(lines)
    rd.metrics.write_text("\n".join(lines) + "\n")
    return rd.path


def _finite_or_none(x) -> bool:
    return x is None or (isinstance(x, (int, float)) and math.isfinite(x))


def test_fuzzed_records_are_problems_never_errors_and_never_ranked(tmp_path):
    from typer.testing import CliRunner

    from overmem.phases import Thresholds
    from overmem.rundir import load_run
    from overmem.summary import summarize, summary_json
    from overmem.table import table_model
    from overmem_tui.cli import app
    from overmem_tui.render import advice_text, phase_table
    from overmem_tui.state import make_view, plots, status_line

    rng = random.Random(7)
    runner = CliRunner()
    problems_seen = 0
    for index in range(N_RECORD_RUNS):
        path = _fuzzed_run(tmp_path, rng, index)
        run = load_run(path)
        problems_seen += len(run.problems)
        for m in run.metrics:  # whatever was kept is a valid value
            assert math.isfinite(m.value), m
            assert m.metric != "ppl" or m.value >= 1.0, m
            assert m.metric != "acc" or 0.0 <= m.value <= 1.0, m
            assert "/" not in m.checkpoint and not m.checkpoint.startswith("."), m
        summary = summarize(run)
        obj = json.loads(json.dumps(summary_json(summary), allow_nan=False))  # no NaN/Infinity leaks out
        for ckpt in obj["checkpoints"]:
            for values in ckpt["metrics"].values():
                assert _finite_or_none(values["ppl"]) and _finite_or_none(values["acc"])
        assert obj["problems"] == list(run.problems)
        table_model(summary)
        phase_table(summary), advice_text(summary)
        view = make_view(run, None, Thresholds())
        status_line(view)
        if view.summary is not None and view.summary.splits:
            plots(view.summary, log_scale=rng.random() < 0.5)
        result = runner.invoke(app, ["recommend", str(path), "--json"])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "unexpected" not in result.output
        if run.problems:
            assert result.exit_code == 3 and json.loads(result.stdout)["problems"]
    print(f"{problems_seen} problems in {N_RECORD_RUNS} runs")
    assert problems_seen > N_RECORD_RUNS  # the generator did produce bad records


def test_a_clean_run_among_the_fuzzed_ones_has_no_problems(tmp_path):
    """The control: the same run without the random records reads clean and exits 0."""
    from typer.testing import CliRunner

    from overmem_tui.cli import app

    path = _fuzzed_run(tmp_path, random.Random(1), 0, extra=0)
    result = CliRunner().invoke(app, ["recommend", str(path), "--json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["problems"] == [] and obj["recommended"] == "ep2"
