"""watch: time to first full paint for runs with 10, 200 and 1000 checkpoints (target < 1 s at
200), latency from an append to metrics.jsonl to the new value on screen (target < 1 s), and
idle CPU while nothing changes (target < 2% of a core).  Run: .venv/bin/python benchmarks/watch_startup.py"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from overmem.rundir import CheckpointInfo, Metric, RunDir, RunInfo  # noqa: E402
from overmem_tui.app import make_app  # noqa: E402


def make_run(root: Path, count: int) -> Path:
    rd = RunDir(root / f"run{count}")
    rd.create(RunInfo(status="running", base_model={"id": "x"}))
    rd.checkpoints.mkdir()
    lines = []
    for i in range(1, count + 1):
        folder = rd.checkpoint(f"ep{i}")
        folder.mkdir()
        (folder / "checkpoint.json").write_text(json.dumps(CheckpointInfo(f"ep{i}", "adapter", epoch=i).to_json()))
        for split in ("train", "val", "test"):
            ppl = 3.0 * (1 + max(0, i - count / 3) / count * 3)
            lines.append(Metric(f"ep{i}", split, "ppl", ppl, "mean", 500).to_json())
            lines.append(Metric(f"ep{i}", split, "acc", min(0.8, i / 10), "mean", 500).to_json())
    (rd.metrics).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return rd.path


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def first_paint(path: Path) -> float:
    start = time.perf_counter()
    app = make_app([path])
    async with app.run_test(size=(160, 48)) as pilot:
        while True:
            screen = app.watch_screen
            if screen.state and screen.state.summary and screen.query_one("#table").row_count:
                break
            await pilot.pause(0.01)
        await pilot.pause()
        return time.perf_counter() - start


async def latency_and_idle(path: Path) -> tuple[float, float]:
    app = make_app([path])
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.watch_screen
        while not (screen.state and screen.state.summary):
            await pilot.pause(0.01)
        await pilot.pause(1.0)
        c0, t0 = cpu_seconds(), time.perf_counter()
        await asyncio.sleep(5.0)
        idle = (cpu_seconds() - c0) / (time.perf_counter() - t0)
        start = time.perf_counter()
        RunDir(path).append([Metric("ep10", "val", "acc", 0.123, "mean", 500)])
        while screen.state.summary.rows[-1].get("val").acc != 0.123:
            await pilot.pause(0.01)
        return time.perf_counter() - start, idle


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for count in (10, 200, 1000):
            path = make_run(Path(tmp), count)
            print(f"{count:5d} checkpoints: first full paint {asyncio.run(first_paint(path)):.2f}s")
        latency, idle = asyncio.run(latency_and_idle(make_run(Path(tmp) / "live", 10)))
        print(f"append -> visible: {latency * 1000:.0f} ms (target < 1000 ms); idle CPU {idle * 100:.1f}% of a core "
              "(target < 2%; headless test driver included)")


if __name__ == "__main__":
    main()
