"""Typed errors raised by core; the CLI turns them into one stderr line.

Each subclass carries an ``exit_code`` so scripts can tell bad input (2) from a
run that exists but cannot be used (3) and a failed job (1).
"""

from __future__ import annotations


class OvermemError(Exception):
    """Base of every error overmem reports to a user as one line."""

    exit_code = 1


class UsageError(OvermemError):
    """An argument or option value that cannot be used as given."""

    exit_code = 2


class RunNotFound(OvermemError):
    """The path is not a run directory overmem can read."""

    exit_code = 2


class CorruptRun(OvermemError):
    """A run directory whose files are present but not readable as the contract says."""

    exit_code = 3


class CorruptFile(CorruptRun):
    """A file that is not what its format says (a safetensors header that lies about its data)."""


class EmptyRun(OvermemError):
    """A run directory with nothing to decide on yet."""

    exit_code = 3


class UnknownSplit(UsageError):
    """A split name that the run has no metrics for."""


class UnknownMetric(UsageError):
    """A metric name (``--acc-metric``) that the run did not log, or that is no accuracy."""


class UnknownCheckpoint(UsageError):
    """A checkpoint name that the run does not have."""


class DataError(OvermemError):
    """Training or evaluation data that cannot be loaded or has the wrong fields."""

    exit_code = 2


class ModelError(OvermemError):
    """A model or checkpoint that cannot be loaded."""

    exit_code = 2


class MergeError(OvermemError):
    """Inputs that cannot be merged exactly (different bases, shapes, names...)."""

    exit_code = 2


class OutputExists(UsageError):
    """An output path that exists, where overwriting needs --force."""


class BackendUnavailable(OvermemError):
    """An evaluation backend that cannot run here (e.g. vLLM not installed)."""

    exit_code = 2


class ClaimLost(OvermemError):
    """An evaluator's claim on a checkpoint was taken over while it worked (its results are dropped)."""
