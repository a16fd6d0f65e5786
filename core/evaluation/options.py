"""What one evaluation is asked to do: the options of ``overmem eval``, checked before any work."""

from __future__ import annotations

from dataclasses import dataclass, field

from overmem.errors import UsageError
from overmem.evaluation.generators import BACKENDS
from overmem.models.loading import check_device
from overmem.params import require
from overmem.phases import Thresholds
from overmem.rundir.claims import CLAIM_TIMEOUT
from overmem.rundir.lines import EVAL_METRICS

DEFAULT_MAX_LEN = 2048  # tokens of prompt + reference, when the run recorded none


@dataclass(frozen=True)
class EvalOptions:
    splits: tuple[str, ...] | None = None  # None: every split the run defines
    checkpoints: tuple[str, ...] | None = None  # None: all
    backend: str = "auto"
    max_new_tokens: int = 256
    batch_size: int = 16
    limit: int | None = None
    force: bool = False
    metrics: tuple[str, ...] = EVAL_METRICS
    split_files: dict = field(default_factory=dict)  # name -> SplitSpec json: defined once, remembered
    template: str | dict | None = None  # a PromptFormat's JSON form: recorded in the run
    max_len: int | None = None  # recorded in the run
    base: dict | None = None  # the base model record (Trainer folders whose files do not name it)
    acc_metric: str | None = None  # a Trainer-logged generation accuracy that drives phases; recorded in the run
    device: str | None = None  # the hf backend's device (default: cuda when there is one)
    gpu_memory_utilization: float | None = None  # vLLM's share of the GPU (default 0.45 beside training)
    tensor_parallel_size: int | None = None  # vLLM: GPUs one model spans
    steal_claims: bool = False  # evaluate checkpoints other evaluators claim (a human who knows better)
    claim_timeout: float = CLAIM_TIMEOUT  # a claim without a heartbeat this long is taken over
    trust_remote_code: bool = False  # this invocation allows a model folder's own code (never the run's record)
    adaptive: bool = False  # generate each checkpoint only as far as its verdict needs (overmem.adaptive)
    thresholds: Thresholds = Thresholds()  # what the adaptive plan decides with (as recommend would)

    def validate(self) -> "EvalOptions":
        """UsageError for the first option out of range, before anything is loaded or written."""
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}")
        if not self.metrics or set(self.metrics) - set(EVAL_METRICS):
            raise UsageError(f"--metrics takes {', '.join(EVAL_METRICS)}")
        for option, value in (("--max-new-tokens", self.max_new_tokens), ("--batch-size", self.batch_size),
                              ("--limit", self.limit), ("--tensor-parallel-size", self.tensor_parallel_size)):
            require(option, value, int, low=1)
        require("--max-len", self.max_len, int, low=8)
        require("--gpu-memory-utilization", self.gpu_memory_utilization, float, low=0, low_open=True, high=1)
        require("--claim-timeout", self.claim_timeout, float, low=0, low_open=True)
        check_device(self.device, self.tensor_parallel_size or 1)
        self.thresholds.validate()
        return self
