"""What a run is evaluated on, given once and remembered in its run.json.

Split definitions (a file per split, its fields, layout and answer format), the
prompt format and the evaluation length. For overmem's own runs training wrote
them; for a Trainer output folder ``overmem eval DIR --split-file val=F`` writes
them into the overlay ``DIR/overmem/run.json``, so later commands need no options.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from overmem.data.answers import EXTRACTORS
from overmem.data.loaders import SplitSpec, load_rows
from overmem.evaluation.lm_eval_tasks import LM_EVAL_KIND, check_source
from overmem.data.template import PromptFormat
from overmem.errors import CorruptRun, DataError
from overmem.rundir.names import safe_name
from overmem.rundir import RunInfo, RunReader, canonical_split
from overmem.rundir.records import STATUS_RUNNING


@dataclass(frozen=True)
class Definitions:
    """Changes to what a run is evaluated on (None: keep what the run has)."""

    splits: dict  # name -> SplitSpec json
    template: PromptFormat | None = None
    max_len: int | None = None
    base: dict | None = None  # the base model record, for Trainer folders whose files do not name it
    acc_metric: str | None = None  # a Trainer metric that is generation accuracy (overmem.values.accuracy_series)

    def empty(self) -> bool:
        return not self.splits and self.template is None and self.max_len is None and self.base is None \
            and self.acc_metric is None


def default_format(specs: dict[str, SplitSpec]) -> PromptFormat:
    """The prompt format a Trainer folder's data implies, as TRL would render it: chat turns
    through the chat template, ready-made prompt/completion text as is, two text fields
    through the Alpaca template (overmem.data.template)."""
    for spec in own_format(specs).values():
        rows = load_rows(spec.source, 0, 1)
        if rows and isinstance(rows[0]["query"], list):
            return PromptFormat.parse("chat")
        if rows and spec.source.layout in ("auto", "prompt-completion") and _is_prompt_completion(spec):
            return PromptFormat.parse("raw")
    return PromptFormat.parse("alpaca")


def own_format(specs: dict[str, SplitSpec]) -> dict[str, SplitSpec]:
    """The splits prompted with the run's format: all but lm-eval tasks, which bring their own."""
    return {name: spec for name, spec in specs.items() if spec.source.kind != LM_EVAL_KIND}


def _is_prompt_completion(spec: SplitSpec) -> bool:
    from overmem.data.loaders import detect_layout, open_dataset

    return detect_layout(spec.source, list(open_dataset(spec.source).column_names)) == "prompt-completion"


def define(reader: RunReader, changes: Definitions) -> RunInfo:
    """Record ``changes`` in the run's run.json (the overlay's for a Trainer folder) and
    return the run's info with them; nothing is written when there is nothing to change."""
    run = reader.snapshot()
    if reader.info_problem:  # never written over: whoever wrote it should see what is wrong
        raise CorruptRun(f"{reader.rundir.path}: {reader.info_problem}")
    if not changes.splits and not (run.info and run.info.data.get("splits")):
        raise DataError(f"{run.path} has no split definitions to evaluate on: give --split-file val=FILE "
                        f"(and test=FILE ...) once; overmem remembers them in {reader.rundir.run_json}")
    if changes.acc_metric is not None:
        from overmem.values import accuracy_series, build_rows

        # a name the run never logged, or values that are no accuracy, are one line before any write
        build_rows(run, accuracy=accuracy_series(run, changes.acc_metric))
    if changes.empty():
        return run.info
    specs = {canonical_split(k): SplitSpec.from_json(v) for k, v in changes.splits.items()}
    for spec in own_format(specs).values():  # load now: a bad file is one line before anything is written
        load_rows(spec.source, 0, 1)  # (an lm-eval task was loaded when --task defined it)
    own = reader.rundir.read_info() if reader.rundir.exists() else None
    if own is None:  # a Trainer folder's first definitions: the overlay starts from what its files say
        known = run.info
        own = RunInfo(status=known.status if known else STATUS_RUNNING,
                      base_model=known.base_model if known else {"id": "unknown", "path": None},
                      method=known.method if known else {}, loss="trainer")
    template = changes.template
    if template is None and not own.prompt_template:
        template = default_format(specs)
    data = {**own.data, "splits": {**(own.data.get("splits") or {}), **{k: v.to_json() for k, v in specs.items()}}}
    if changes.acc_metric is not None:
        data["acc_metric"] = changes.acc_metric
    hyper = {**own.hyperparameters, **({"max_len": changes.max_len} if changes.max_len else {})}
    changed = dict(data=data, hyperparameters=hyper, base_model=changes.base or own.base_model,
                   prompt_template=template.to_json() if template is not None else own.prompt_template)
    if reader.rundir.exists():
        reader.rundir.update_info(**changed)
    else:
        reader.rundir.create(replace(own, **changed))
    return reader.snapshot().info


def recorded_splits(info: RunInfo) -> dict[str, SplitSpec]:
    """The splits a run.json defines, each checked (CorruptRun naming the split otherwise)."""
    splits = info.data.get("splits") or {}
    if not isinstance(splits, dict):
        raise CorruptRun("run.json: data.splits is not an object")
    out = {}
    for name, spec in splits.items():
        safe_name(name, "run.json: data.splits has a split name that", CorruptRun)
        try:
            out[canonical_split(name)] = SplitSpec.from_json(spec)
            if out[canonical_split(name)].source.kind == LM_EVAL_KIND:
                check_source(out[canonical_split(name)].source)
        except DataError as exc:
            raise CorruptRun(f"run.json: data.splits.{name}: {exc}") from exc
    return out


def recorded_answer(info: RunInfo) -> tuple[tuple[str, ...], bool]:
    """How the run reads answers: its answer formats (in order) and whether a bare last number counts."""
    answer = info.data.get("answer") or {}
    formats = answer.get("formats") if isinstance(answer, dict) else None
    if not isinstance(answer, dict) or not isinstance(formats or [], list) or \
            not all(isinstance(f, str) and f in EXTRACTORS for f in formats or []):
        raise CorruptRun(f"run.json: data.answer {str(answer)[:80]!r} is not {{\"formats\": [{', '.join(EXTRACTORS)}], "
                         "\"fallback\": true|false}")
    return tuple(formats or ()), bool(answer.get("fallback", False))


def recorded_max_len(info: RunInfo, default: int | None) -> int | None:
    """The run's longest prompt + reference in tokens (``default`` when it recorded none)."""
    value = info.hyperparameters.get("max_len")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 8:
        raise CorruptRun(f"run.json: hyperparameters.max_len {value!r} is not a token count of at least 8")
    return value

