"""``python -m overmem.training CONFIG.json [--resume]``: train from a saved TrainConfig, quietly.

Used by ``overmem demo`` to train in a process of its own while it evaluates
(no typer or rich needed: core stays UI-free).
"""

from __future__ import annotations

import json
import sys

from overmem.training.config import TrainConfig
from overmem.training.finetuning import MethodConfig
from overmem.training.trainer import train


def main(argv: list[str]) -> int:
    obj = json.loads(open(argv[0]).read())
    obj["method"] = MethodConfig(**{**obj["method"], "targets": tuple(obj["method"].get("targets") or ())})
    cfg = TrainConfig(**obj)
    after = None
    if cfg.eval:  # the config asks for in-process evaluation (train --eval)
        from overmem.evaluation.inprocess import EvaluateAfterCheckpoint

        after = EvaluateAfterCheckpoint()
    train(cfg, resume="--resume" in argv, after_checkpoint=after)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
