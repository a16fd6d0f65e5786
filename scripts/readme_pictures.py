"""Regenerate the README's pictures from a finished demo run:
docs/report.png (``overmem report``) and docs/watch.svg (the watch TUI at 120x40).

    .venv/bin/python scripts/readme_pictures.py demo-run
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def _screenshot(run: Path, out: Path) -> None:
    from overmem_tui.app import OvermemApp

    app = OvermemApp([str(run)])
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(1.0)
        svg = app.export_screenshot(title="overmem watch demo-run")
    out.write_text(svg)


def main(run: Path) -> None:
    from overmem.report import write_report
    from overmem.rundir import load_run
    from overmem.summary import summarize

    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    write_report(summarize(load_run(run, strict=True)), docs / "report.png")
    asyncio.run(_screenshot(run, docs / "watch.svg"))
    print(f"wrote {docs / 'report.png'} and {docs / 'watch.svg'} from {run}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
