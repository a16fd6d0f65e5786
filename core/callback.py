"""``from overmem.callback import OvermemCallback``: the documented import for Trainer/TRL scripts.

The installed package is named overmem (not core), so a training repository with its
own top-level ``core`` package imports this, not its own code.
"""

from overmem.evaluation.callback import OvermemCallback

__all__ = ["OvermemCallback"]
