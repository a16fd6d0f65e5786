"""``python -m overmem.evaluation RUN [OPTIONS_JSON]``: evaluate what is left of a run, quietly.

OPTIONS_JSON holds EvalOptions fields (e.g. ``{"backend": "hf", "batch_size": 50}``).
Used by ``overmem demo`` as a second evaluator once training has freed a core; the
claim files keep it and the first evaluator off each other's checkpoints.
"""

from __future__ import annotations

import json
import sys

from overmem.evaluation.runner import EvalOptions, Evaluator


def main(argv: list[str]) -> int:
    fields = json.loads(argv[1]) if len(argv) > 1 else {}
    for name in ("splits", "checkpoints", "metrics"):
        if fields.get(name) is not None:
            fields[name] = tuple(fields[name])
    evaluator = Evaluator(argv[0], EvalOptions(**fields))
    try:
        evaluator.evaluate_pending()
    finally:
        evaluator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
