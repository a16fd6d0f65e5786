"""The run-directory contract: layout, records, the one reader and the one writer."""

from overmem.rundir.writer import RunDir
from overmem.rundir.reader import BASE_CHECKPOINT, RunReader, load_run
from overmem.rundir.records import (
    KIND_ADAPTER,
    KIND_BASE,
    KIND_FULL,
    KIND_MERGE,
    SCHEMA_VERSION,
    STATUS_FAILED,
    STATUS_FINISHED,
    STATUS_RUNNING,
    CheckpointInfo,
    Metric,
    Run,
    RunInfo,
    TrainLog,
)
from overmem.rundir.lines import canonical_split

__all__ = [
    "BASE_CHECKPOINT",
    "KIND_ADAPTER",
    "KIND_BASE",
    "KIND_FULL",
    "KIND_MERGE",
    "SCHEMA_VERSION",
    "STATUS_FAILED",
    "STATUS_FINISHED",
    "STATUS_RUNNING",
    "CheckpointInfo",
    "Metric",
    "Run",
    "RunDir",
    "RunInfo",
    "RunReader",
    "TrainLog",
    "canonical_split",
    "load_run",
]
