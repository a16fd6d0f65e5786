"""Data sources, presets and split definitions (recorded in run.json, reused by eval).

A source normalizes any dataset to rows ``{"query", "response", "answer"}``. A
split is a source plus a row range and an optional seeded sample, so a run's
splits can be rebuilt exactly from run.json.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from core.data import synthetic
from core.data.answers import EXTRACTORS, extract_answer
from core.errors import DataError

FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class DataSource:
    """Where rows come from and how to read them."""

    kind: str  # "synthetic" | "file" | "hub"
    ref: str  # preset name, file/folder path, or hub id
    prompt_field: str = "query"
    response_field: str = "response"
    answer_format: str = "gsm8k"  # extractor of the gold answer from the response
    hub_config: str | None = None
    hub_split: str = "train"
    params: dict = field(default_factory=dict)  # synthetic: seed, stream, path_seed

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "DataSource":
        return cls(**obj)


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
        return cls(DataSource.from_json(obj["source"]), obj.get("start", 0), obj.get("count"),
                   obj.get("sample"), obj.get("seed", 0))


@dataclass(frozen=True)
class Preset:
    name: str
    help: str
    prompt_field: str
    response_field: str
    answer_format: str
    hub_id: str | None = None
    hub_config: str | None = None
    hub_split: str = "train"


PRESETS = {
    p.name: p
    for p in (
        Preset("metamathqa", 'MetaMathQA: query/response, answer after "The answer is:"', "query", "response",
               "metamath", "meta-math/MetaMathQA"),
        Preset("gsm8k", 'GSM8K: question/answer, answer after "####"', "question", "answer", "gsm8k",
               "openai/gsm8k", "main", "test"),
        Preset("synthetic-math", "seeded arithmetic word problems with several solution paths (offline)",
               "query", "response", "gsm8k"),
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
    seed: int = 0,
) -> DataSource:
    """Turn a --data value into a source: a preset name, a local file/folder, or a hub id."""
    if preset is None and data in PRESETS:
        preset = data
    p = PRESETS.get(preset) if preset else None
    if preset and p is None:
        raise DataError(f"unknown data preset {preset!r} (presets: {', '.join(PRESETS)})")
    fields = {
        "prompt_field": prompt_field or (p.prompt_field if p else "query"),
        "response_field": response_field or (p.response_field if p else "response"),
        "answer_format": p.answer_format if p else "gsm8k",
    }
    if p and p.name == "synthetic-math":
        return DataSource("synthetic", "synthetic-math", params={
            "seed": seed, "stream": synthetic_stream, "path_seed": synthetic_path_seed}, **fields)
    path = Path(data).expanduser()
    if path.exists():
        return DataSource("file", str(path.resolve()), **fields)
    if p and data == p.name:
        return DataSource("hub", p.hub_id, hub_config=p.hub_config, hub_split=hub_split or p.hub_split, **fields)
    if "/" in data and not data.startswith((".", "/")):
        return DataSource("hub", data, hub_split=hub_split or "train", **fields)
    raise DataError(f"{data}: no such file or folder, and not a preset ({', '.join(PRESETS)}) or hub id")


def _data_files(path: Path) -> tuple[str, list[str]]:
    if path.is_file():
        fmt = FILE_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(f"{path}: unsupported file type (use {', '.join(FILE_FORMATS)})")
        return fmt, [str(path)]
    files = sorted(f for f in path.iterdir() if f.suffix.lower() in FILE_FORMATS)
    if not files:
        raise DataError(f"{path}: folder holds no {'/'.join(FILE_FORMATS)} files")
    formats = {FILE_FORMATS[f.suffix.lower()] for f in files}
    if len(formats) > 1:
        raise DataError(f"{path}: folder mixes file types {sorted(formats)}")
    return formats.pop(), [str(f) for f in files]


def _records(source: DataSource) -> list[dict]:
    import datasets

    datasets.disable_progress_bars()
    try:
        if source.kind == "file":
            fmt, files = _data_files(Path(source.ref))
            ds = datasets.load_dataset(fmt, data_files=files, split="train")
        else:
            ds = datasets.load_dataset(source.ref, source.hub_config, split=source.hub_split)
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types (offline, schema, parse)
        raise DataError(f"cannot load {source.ref}: {type(exc).__name__}: {exc}".split("\n")[0]) from exc
    missing = {source.prompt_field, source.response_field} - set(ds.column_names)
    if missing:
        raise DataError(
            f"{source.ref}: missing field(s) {sorted(missing)}; columns are {ds.column_names} "
            "(set --prompt-field/--response-field)"
        )
    return ds.to_list()


def load_rows(source: DataSource, start: int = 0, count: int | None = None) -> list[dict]:
    """Rows {query, response, answer} of a source, from ``start``, at most ``count``."""
    if source.kind == "synthetic":
        if count is None:
            raise DataError("synthetic data needs an explicit count")
        prm = source.params
        return synthetic.generate(prm.get("seed", 0), prm.get("stream", "train"), start, count,
                                  prm.get("path_seed", "train"))
    extractor = EXTRACTORS[source.answer_format].extract
    rows = []
    records = _records(source)
    stop = len(records) if count is None else min(len(records), start + count)
    for i in range(start, stop):
        rec = records[i]
        query, response = rec[source.prompt_field], rec[source.response_field]
        if not isinstance(query, str) or not isinstance(response, str):
            raise DataError(f"{source.ref} row {i}: {source.prompt_field}/{source.response_field} are not text")
        answer = extractor(response)
        rows.append({"query": query, "response": response, "answer": answer})
    return rows


def count_rows(source: DataSource) -> int | None:
    return None if source.kind == "synthetic" else len(_records(source))


def select(spec: SplitSpec) -> list[dict]:
    """The rows of a split, exactly as recorded."""
    rows = load_rows(spec.source, spec.start, spec.count)
    if spec.sample is not None and spec.sample < len(rows):
        keep = sorted(random.Random(spec.seed).sample(range(len(rows)), spec.sample))
        rows = [rows[i] for i in keep]
    return rows


def default_splits(train: DataSource, n_train: int, *, eval_size: int, test: DataSource | None,
                   seed: int) -> tuple[SplitSpec, dict[str, SplitSpec]]:
    """The training set and the three monitored splits (METHOD.md 2).

    train: a sample of the training rows of the test set's size; val: held-out rows
    of the same source after the training rows; test: the test source.
    """
    fit = SplitSpec(train, 0, n_train)
    splits = {"train": SplitSpec(train, 0, n_train, sample=min(eval_size, n_train), seed=seed)}
    if train.kind == "synthetic":
        heldout = replace(train, params={**train.params, "stream": "heldout", "path_seed": "reference"})
        splits["val"] = SplitSpec(heldout, 0, eval_size)
    else:
        splits["val"] = SplitSpec(train, n_train, eval_size)
    if test is not None:
        splits["test"] = SplitSpec(test, 0, eval_size if test.kind == "synthetic" else None,
                                   sample=None if test.kind == "synthetic" else eval_size, seed=seed)
    return fit, splits
