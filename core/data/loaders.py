"""Data sources, presets and split definitions (recorded in run.json, reused by eval).

A source normalizes any dataset to rows ``{"query", "response", "answer"}``. A
split is a source plus a row range and an optional seeded sample, so a run's
splits can be rebuilt exactly from run.json.
"""

from __future__ import annotations

import functools
import os
import random
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from overmem.data import synthetic
from overmem.data.diagnose import diagnose_files, root_cause
from overmem.data.answers import gold_answer
from overmem.data.layouts import detect_layout, normalize_record
from overmem.errors import DataError

FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
SOURCE_KINDS = ("synthetic", "file", "hub", "lm-eval")  # lm-eval: a task, read by evaluation.lm_eval_tasks
SOURCE_ROLES = ("train", "eval")  # what a source is read for (see resolve_source)
MAX_SYNTHETIC = 10_000_000  # rows a synthetic split may ask for (each is generated in memory)


@dataclass(frozen=True)
class DataSource:
    """Where rows come from and how to read them.

    ``layout`` says how a record holds its prompt and reference: ``fields`` (two text
    columns), TRL's conversational ``messages`` (the last assistant turn is the
    reference, the turns before it the prompt) or TRL's ``prompt-completion`` (text or
    messages); ``auto`` picks by the columns present, the named fields first.
    """

    kind: str  # "synthetic" | "file" | "hub" | "lm-eval"
    ref: str  # preset name, file/folder path, hub id, or lm-eval task name or YAML file/folder
    prompt_field: str = "query"
    response_field: str = "response"
    answer_format: str = "gsm8k"  # extractor of the gold answer from the response ("auto": any marker)
    hub_config: str | None = None
    hub_split: str = "train"
    params: dict = field(default_factory=dict)  # synthetic: seed, stream, path_seed
    revision: str | None = None  # hub commit the rows come from (recorded so a run rebuilds them exactly)
    layout: str = "auto"
    answer_field: str | None = None  # a column holding the gold answer, when the reference has no marker

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "DataSource":
        """A recorded source (DataError naming the field when it is not one)."""
        if not isinstance(obj, dict):
            raise DataError(f"a data source {obj!r} is not an object")
        values = {f.name: obj[f.name] for f in fields(cls) if f.name in obj}
        for f in fields(cls):
            value = values.get(f.name)
            expected = dict if f.name == "params" else str
            if value is not None and not isinstance(value, expected) or value is None and f.name in ("kind", "ref"):
                raise DataError(f"the data source field {f.name} {value!r} is not a {expected.__name__}")
        if values["kind"] not in SOURCE_KINDS:
            raise DataError(f"the data source kind {values['kind']!r} is not one of {', '.join(SOURCE_KINDS)}")
        return cls(**values)


@dataclass(frozen=True)
class SplitSpec:
    """Rows [start, start+count) of a source, then (optionally) a seeded sample of k."""

    source: DataSource
    start: int = 0
    count: int | None = None
    sample: int | None = None
    seed: int = 0

    def to_json(self) -> dict:
        return {"source": self.source.to_json(), "start": self.start, "count": self.count,
                "sample": self.sample, "seed": self.seed}

    @classmethod
    def from_json(cls, obj: dict) -> "SplitSpec":
        """A recorded split (DataError naming the field when it is not one)."""
        if not isinstance(obj, dict) or "source" not in obj:
            raise DataError(f"a split definition {str(obj)[:80]!r} has no source")
        numbers = {"start": obj.get("start", 0), "count": obj.get("count"), "sample": obj.get("sample"),
                   "seed": obj.get("seed", 0)}
        for key, value in numbers.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53):
                raise DataError(f"a split's {key} {value!r} is not a non-negative whole number")
        return cls(DataSource.from_json(obj["source"]), numbers["start"] or 0, numbers["count"], numbers["sample"],
                   numbers["seed"] or 0)


@dataclass(frozen=True)
class Preset:
    """A named dataset: its columns, answer format, hub location and splits.

    A run trains on ``hub_split``; ``eval_split`` is the hub's held-out split, which a
    preset name means when it names data to evaluate (None: the preset has none). A
    run trained on the preset is tested on ``test_set``'s evaluation data (None: it
    brings no test set).
    """

    name: str
    help: str
    prompt_field: str
    response_field: str
    answer_format: str
    hub_id: str | None = None
    hub_config: str | None = None
    hub_split: str = "train"
    eval_split: str | None = None
    test_set: str | None = None


PRESETS = {
    p.name: p
    for p in (
        # the paper's setup: finetune on MetaMathQA, test on GSM8K's test split
        Preset("metamathqa", 'MetaMathQA: query/response, answer after "The answer is:"', "query", "response",
               "metamath", "meta-math/MetaMathQA", test_set="gsm8k"),
        Preset("gsm8k", 'GSM8K: question/answer, answer after "####"', "question", "answer", "gsm8k",
               "openai/gsm8k", "main", hub_split="train", eval_split="test", test_set="gsm8k"),
        Preset("synthetic-math", "seeded arithmetic word problems with several solution paths (offline)",
               "query", "response", "synthetic"),
    )
}


def resolve_source(
    data: str,
    *,
    preset: str | None = None,
    prompt_field: str | None = None,
    response_field: str | None = None,
    hub_split: str | None = None,
    synthetic_stream: str = "train",
    synthetic_path_seed: str = "train",
    synthetic_variants: int = 1,
    synthetic_style: str = "narrow",
    answer_format: str | None = None,
    answer_field: str | None = None,
    seed: int = 0,
    role: str = "eval",
) -> DataSource:
    """Turn a --data value into a source: a preset name, a local file/folder, or a hub id.

    ``answer_format`` (default: the preset's, else "auto") says how its references state
    the gold answer; ``answer_field`` names a column that holds it instead. ``role``
    picks a preset's hub split when ``hub_split`` does not: "train" its training split,
    "eval" (the default: every caller but the training data evaluates) its held-out
    split where it has one, so ``gsm8k`` trains on GSM8K's train split and evaluates
    on its test split."""
    if role not in SOURCE_ROLES:
        raise ValueError(f"role {role!r} is not one of {SOURCE_ROLES}")
    if preset is None and data in PRESETS:
        preset = data
    p = PRESETS.get(preset) if preset else None
    if preset and p is None:
        raise DataError(f"unknown data preset {preset!r} (presets: {', '.join(PRESETS)})")
    fields = {
        "prompt_field": prompt_field or (p.prompt_field if p else "query"),
        "response_field": response_field or (p.response_field if p else "response"),
        "answer_format": answer_format or (p.answer_format if p else "auto"),
        "answer_field": answer_field,
    }
    if p and p.name == "synthetic-math":
        return DataSource("synthetic", "synthetic-math", params={
            "seed": seed, "stream": synthetic_stream, "path_seed": synthetic_path_seed,
            "variants": synthetic_variants, "style": synthetic_style}, **fields)
    path = Path(data).expanduser()
    if path.exists():
        return DataSource("file", str(path.resolve()), **fields)
    if p and data == p.name:
        return DataSource("hub", p.hub_id, hub_config=p.hub_config, hub_split=hub_split or preset_split(p, role),
                          **fields)
    if "/" in data and not data.startswith((".", "/")):
        return DataSource("hub", data, hub_split=hub_split or "train", **fields)
    raise DataError(f"{data}: no such file or folder, and not a preset ({', '.join(PRESETS)}) or hub id")


def preset_split(preset: Preset, role: str) -> str:
    """The hub split a preset reads for ``role`` ("train" or "eval")."""
    return preset.eval_split if role == "eval" and preset.eval_split else preset.hub_split


def preset_test_source(train: DataSource) -> DataSource | None:
    """The test set that comes with training data read from a preset's hub training split
    (GSM8K's and MetaMathQA's: GSM8K's test split), or None (files, other hub datasets,
    or a preset read from another split, which would test on what it trains on)."""
    for p in PRESETS.values():
        if train.kind == "hub" and p.hub_id == train.ref and p.hub_split == train.hub_split and p.test_set:
            return resolve_source(p.test_set, role="eval")
    return None


def _data_files(path: Path) -> tuple[str, list[str]]:
    if path.is_file():
        fmt = FILE_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(f"{path}: unsupported file type (use {', '.join(FILE_FORMATS)})")
        return fmt, [str(path)]
    if not path.is_dir():
        raise DataError(f"{path} is neither a data file nor a folder of them")
    files = sorted(f for f in path.iterdir() if f.suffix.lower() in FILE_FORMATS and f.is_file())
    if not files:
        raise DataError(f"{path}: folder holds no {'/'.join(FILE_FORMATS)} files")
    formats = {FILE_FORMATS[f.suffix.lower()] for f in files}
    if len(formats) > 1:
        raise DataError(f"{path}: folder mixes file types {sorted(formats)}")
    return formats.pop(), [str(f) for f in files]


def _file_stamp(files: list[str]) -> tuple:
    return tuple((f, os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files)


@functools.lru_cache(maxsize=16)
def _dataset(kind: str, ref: str, config: str | None, split: str, revision: str | None, stamp: tuple):
    """The Arrow dataset of a source, loaded once per process (memory-mapped, not a list).

    ``stamp`` (file names, mtimes, sizes) makes a changed local file load again.
    """
    import datasets

    datasets.disable_progress_bars()
    try:
        if kind == "file":
            fmt = FILE_FORMATS[Path(stamp[0][0]).suffix.lower()]
            return datasets.load_dataset(fmt, data_files=[f for f, _, _ in stamp], split="train")
        return datasets.load_dataset(ref, config, split=split, revision=revision)
    except Exception as exc:  # datasets raises many types (offline, schema, parse)
        what = (diagnose_files([f for f, _, _ in stamp]) if kind == "file" else None) or root_cause(exc)
        raise DataError(f"cannot load {ref}: {what}".split("\n")[0]) from exc


def open_dataset(source: DataSource):
    """The source's dataset (cached per process)."""
    if source.kind == "file":
        _, files = _data_files(Path(source.ref))
        return _dataset("file", source.ref, None, "train", None, _file_stamp(files))
    return _dataset("hub", source.ref, source.hub_config, source.hub_split, source.revision, ())


def load_rows(source: DataSource, start: int = 0, count: int | None = None) -> list[dict]:
    """Rows {query, response, answer} of a source, from ``start``, at most ``count``.

    Only the requested slice is turned into Python objects; the dataset itself is
    opened once per process.
    """
    if source.kind == "synthetic":
        if count is None:
            raise DataError("synthetic data needs an explicit count")
        if start + count > MAX_SYNTHETIC:
            raise DataError(f"a synthetic split of rows {start}-{start + count} is more than {MAX_SYNTHETIC:,} rows")
        prm = source.params
        return synthetic.generate(prm.get("seed", 0), prm.get("stream", "train"), start, count,
                                  prm.get("path_seed", "train"), prm.get("variants", 1), prm.get("style", "narrow"))
    if source.kind == "lm-eval":  # its rows need the run's tokenizer (its prompts may use the chat template)
        raise DataError(f"the lm-eval task {source.params.get('task') or source.ref} is a split to evaluate on, "
                        "not data to train or probe on")
    ds = open_dataset(source)
    layout = detect_layout(source, list(ds.column_names))
    if source.answer_field and source.answer_field not in ds.column_names:
        raise DataError(f"{source.ref}: no answer field {source.answer_field!r}; columns are {ds.column_names}")
    stop = len(ds) if count is None else min(len(ds), start + count)
    rows = []
    for i, rec in enumerate(ds.select(range(start, stop)) if stop > start else [], start):
        query, response = normalize_record(source, layout, rec, f"{source.ref} row {i}")
        if source.answer_field:
            gold = rec[source.answer_field]
            answer = None if gold is None else str(gold).strip()
        else:
            answer = gold_answer(response, source.answer_format)
        rows.append({"query": query, "response": response, "answer": answer})
    return rows


def count_rows(source: DataSource) -> int | None:
    return None if source.kind == "synthetic" else len(open_dataset(source))


def hub_revision(ref: str) -> str | None:
    """The commit a hub dataset id resolves to now (None offline): recorded in run.json."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("HF_DATASETS_OFFLINE", "") not in ("", "0"):
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(ref, timeout=10).sha
    except Exception:  # offline, gated, unknown: the run records no revision
        return None


def pin_revision(source: DataSource) -> DataSource:
    """A hub source with its current commit recorded (unchanged when one is set or none is known)."""
    if source.kind != "hub" or source.revision:
        return source
    return replace(source, revision=hub_revision(source.ref))


def select(spec: SplitSpec) -> list[dict]:
    """The rows of a split, exactly as recorded."""
    rows = load_rows(spec.source, spec.start, spec.count)
    if spec.sample is not None and spec.sample < len(rows):
        keep = sorted(random.Random(spec.seed).sample(range(len(rows)), spec.sample))
        rows = [rows[i] for i in keep]
    return rows


def default_splits(train: DataSource, n_train: int, *, eval_size: int, test: DataSource | None,
                   seed: int) -> tuple[SplitSpec, dict[str, SplitSpec]]:
    """The training set and the three monitored splits.

    train: a sample of the training rows of the test set's size; val: held-out rows
    of the same source after the training rows; test: the test source.
    """
    fit = SplitSpec(train, 0, n_train)
    splits = {"train": SplitSpec(train, 0, n_train, sample=min(eval_size, n_train), seed=seed)}
    if train.kind == "synthetic":
        heldout = replace(train, params={**train.params, "stream": "heldout", "path_seed": "reference", "variants": 1})
        splits["val"] = SplitSpec(heldout, 0, eval_size)
    else:
        splits["val"] = SplitSpec(train, n_train, eval_size)
    if test is not None:
        splits["test"] = SplitSpec(test, 0, eval_size if test.kind == "synthetic" else None,
                                   sample=None if test.kind == "synthetic" else eval_size, seed=seed)
    return fit, splits
