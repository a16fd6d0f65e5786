"""Plan and run a merge of checkpoints, and register it in the run.

Refuses (MergeError/UsageError, nothing written) when bases differ, tensor names
or shapes mismatch, a checkpoint is missing or corrupt, the weights do not match
the inputs, or the output exists without ``force``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from overmem.rundir.io import load_json
from overmem.errors import MergeError, OutputExists, RunNotFound, UsageError
from overmem.merging.bases import base_ref_of, local_base, same_base
from overmem.merging.deltas import Delta, FullDelta, LoraDelta, ZeroDelta
from overmem.merging.merge_methods import get_merge_method
from overmem.merging.safetensors_io import TensorReader
from overmem.merging.writers import check_dtypes, write_adapter, write_full
from overmem.progress import Listener, ignore
from overmem.rundir import KIND_BASE, KIND_MERGE, CheckpointInfo, RunDir, load_run
from overmem.rundir.checkpoint import FORMAT_ADAPTER, FORMAT_BASE, adapter_base, folder_format
from overmem.rundir.io import staged_dir
from overmem.rundir.names import real_path, safe_name
from overmem.rundir.writer import CHECKPOINT_JSON
from overmem.rundir.outputs import check_output, lexical, mark_output
from overmem.rundir.sources import run_dir_for
from overmem.rundir.lines import Replaced
from overmem.rundir.records import Run

FORMS = ("full", "adapter")
DEFAULT_SHARD_BYTES = 2 * 1024**3
MAX_WEIGHT = 1e6  # a merge weight beyond this is a typo, and it would overflow float32 weights


@dataclass(frozen=True)
class MergeInput:
    label: str
    fmt: str  # base | adapter | full
    path: Path | None
    checkpoint: CheckpointInfo | None


@dataclass(frozen=True)
class MergePlan:
    run: Run | None  # None: folders merged outside any run
    inputs: tuple[MergeInput, ...]
    weights: tuple[float, ...]
    method: str
    form: str
    name: str
    out: Path
    register: bool
    force: bool
    base_folder: Path
    base_ref: str  # how the merged adapter names its base: as its inputs did (a hub id stays one)
    max_shard_bytes: int = DEFAULT_SHARD_BYTES
    params: dict = field(default_factory=dict)  # the merge method's declared parameters

    @property
    def rundir(self) -> RunDir | None:
        return run_dir_for(self.run.path) if self.run is not None else None


def _input(label: str, path: Path, ckpt: CheckpointInfo | None) -> MergeInput:
    return MergeInput(label, folder_format(path), path, ckpt)


def _resolve(run: Run | None, ref: str) -> MergeInput:
    ckpt = run.checkpoint(ref) if run is not None else None
    if ckpt is not None:
        if ckpt.kind == KIND_BASE:
            return MergeInput(ref, FORMAT_BASE, None, ckpt)
        if ckpt.path is None or not ckpt.path.is_dir():
            raise MergeError(f"checkpoint {ref} has no folder to merge")
        return _input(ref, ckpt.path, ckpt)
    path = Path(ref).expanduser()
    if path.is_dir():
        return _input(path.name, real_path(path), None)
    if run is None:
        raise MergeError(f"{ref}: no such folder")
    have = ", ".join(c.name for c in run.checkpoints) or "none"
    raise MergeError(f"{ref}: no such checkpoint in {run.path} ({have}) and no such folder")


def merge_name(labels: list[str], weights: list[float]) -> str:
    """The merge's checkpoint name from its inputs' names (UsageError when that is no safe name)."""
    equal = all(math.isclose(w, weights[0]) for w in weights)
    parts = labels if equal else [f"{label}@{w:g}" for label, w in zip(labels, weights)]
    return safe_name("merge-" + "+".join(parts), "merge name")


def _open_run(run_path, refs: list[str]) -> Run | None:
    """The run the refs belong to; None when they are all folders and ``run_path`` is no run."""
    try:
        return load_run(run_path)
    except RunNotFound:
        if all(Path(r).expanduser().is_dir() for r in refs):
            return None
        raise


def plan_merge(run_path: str | Path | None, refs: list[str], *, weights: list[float] | None = None,
               method: str = "linear", form: str | None = None, out: str | Path | None = None,
               force: bool = False, max_shard_bytes: int = DEFAULT_SHARD_BYTES, base: str | None = None,
               params: dict | None = None) -> MergePlan:
    """Check everything a merge needs (nothing is written): inputs, base, weights, output."""
    run = _open_run(run_path, refs) if run_path is not None else None
    if len(refs) < 2:
        raise UsageError("merging needs at least two checkpoints")
    m = get_merge_method(method)
    params = m.check_params(params or {})
    weights = list(weights) if weights else [1.0 / len(refs)] * len(refs)
    if len(weights) != len(refs):
        raise UsageError(f"{len(weights)} weights for {len(refs)} checkpoints")
    if not all(math.isfinite(w) and abs(w) <= MAX_WEIGHT for w in weights):
        raise UsageError(f"weights must be finite numbers of at most {MAX_WEIGHT:g} in size")
    inputs = [_resolve(run, r) for r in refs]
    if len({i.label for i in inputs}) < len(inputs):
        raise UsageError("the same checkpoint is given twice")
    base_ref = base_ref_of(run, inputs, base)
    folder = local_base(base_ref)
    for inp in inputs:
        if inp.fmt != FORMAT_BASE:
            same_base(inp, folder, base_ref, run, given=base is not None)
    all_adapters = all(i.fmt in (FORMAT_ADAPTER, FORMAT_BASE) for i in inputs)
    form = form or ("adapter" if all_adapters and m.exact_adapter else "full")
    if form not in FORMS:
        raise UsageError(f"--as must be one of {', '.join(FORMS)}")
    if form == "adapter" and not all_adapters:
        raise UsageError("--as adapter needs every input to be a LoRA-family adapter (or the base)")
    if form == "adapter" and not m.exact_adapter:
        raise UsageError(f"--method {method} has no exact adapter form; use --as full")
    name = merge_name([i.label for i in inputs], weights)
    if form == "full" and all_adapters:
        name += "-full"  # the adapter form of the same merge keeps the plain name
    register = run is not None
    rundir = run_dir_for(run.path) if run is not None else None
    if out is None and rundir is None:
        raise UsageError("folders merged outside a run need --out DIR")
    record = rundir.checkpoint(name) if rundir is not None else None
    if out is None or (record is not None and lexical(out) == record):
        target = record
    else:
        target = check_output(out, force=force)
    if record is not None and record.exists():
        _replaceable_record(record, name, run.path, force)
    adapter_ref = next((adapter_base(i.path) for i in inputs if i.fmt == "adapter"), None) or \
        (run.info.base_model.get("id") if run is not None and run.info is not None else None) or base_ref
    return MergePlan(run, tuple(inputs), tuple(weights), method, form, name, target, register, force, folder,
                     adapter_ref, max_shard_bytes, params)


def _replaceable_record(folder: Path, name: str, run_path: Path, force: bool) -> None:
    """An existing checkpoint of the merge's name is replaced only with --force, and only when
    it is a merge (never a trained checkpoint a crafted record named like a merge)."""
    if not force:
        raise OutputExists(f"checkpoint {name} already exists in {run_path} (use --force to replace it)")
    try:
        kind = load_json(folder / CHECKPOINT_JSON).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != KIND_MERGE:
        raise UsageError(f"checkpoints/{name} in {run_path} is not a merge overmem registered; --force replaces "
                         "only merges")


def _deltas(plan: MergePlan, base: TensorReader) -> list[Delta]:
    out: list[Delta] = []
    for inp in plan.inputs:
        if inp.fmt == FORMAT_BASE:
            out.append(ZeroDelta(inp.label))
        elif inp.fmt == FORMAT_ADAPTER:
            out.append(LoraDelta(inp.label, inp.path, base))
        else:
            out.append(FullDelta(inp.label, inp.path, base))
    return out


def run_merge(plan: MergePlan, on_event: Listener = ignore) -> CheckpointInfo:
    """Write the merged model (under a temporary name, then renamed) and register it in its run."""
    base = TensorReader(plan.base_folder)
    deltas = _deltas(plan, base)  # validates names and shapes before anything is written
    check_dtypes(base, deltas)
    rundir = plan.rundir
    elsewhere = rundir is None or plan.out != rundir.checkpoint(plan.name)
    info = CheckpointInfo(
        name=plan.name,
        kind=KIND_MERGE,
        created=time.time(),
        parents=tuple(i.label for i in plan.inputs),
        weights=plan.weights,
        extra={"method": plan.method, "format": plan.form, "base": plan.base_ref,
               **({"params": plan.params} if plan.params else {}),
               **({"location": str(plan.out)} if elsewhere else {})},
    )
    write = write_adapter if plan.form == "adapter" else write_full
    replacing = rundir is not None and rundir.checkpoint(plan.name).exists()
    if plan.register and not elsewhere:
        with rundir.stage_checkpoint(info, force=plan.force) as folder:
            write(plan, base, deltas, folder, on_event)
    else:
        with staged_dir(plan.out, force=plan.force) as folder:
            write(plan, base, deltas, folder, on_event)
            mark_output(folder, KIND_MERGE, " + ".join(info.parents))
        if plan.register:
            with rundir.stage_checkpoint(info, force=plan.force):
                pass  # a record pointing at the output (checkpoint.json with extra.location)
    if replacing:  # the replaced merge's metrics are not this one's: it is evaluated afresh
        rundir.append([Replaced(plan.name, time.time())])
    return info
