"""From command-line values to a TrainConfig: data sources, splits, method defaults."""

from __future__ import annotations

from dataclasses import dataclass

from overmem.data.answers import GOLD_FORMATS
from overmem.data.loaders import count_rows, default_splits, pin_revision, preset_test_source, resolve_source
from overmem.errors import DataError
from overmem.params import require
from overmem.models.loading import resolve_base
from overmem.training.config import TrainConfig
from overmem.training.finetuning import get_finetuning_method

# Paper sizes: MetaTrain/MetaTest/GSM8K test all have GSM8K test's 1,319 samples.
PAPER_EVAL_SIZE = 1319
SYNTHETIC_TRAIN_SIZE = 200
SYNTHETIC_EVAL_SIZE = 100
SYNTHETIC_VARIANTS = 5


@dataclass(frozen=True)
class DataOptions:
    data: str
    test_data: str | None = None
    preset: str | None = None
    prompt_field: str | None = None
    response_field: str | None = None
    train_size: int | None = None
    eval_size: int | None = None
    variants: int | None = None  # synthetic-math: versions of each seed question (default SYNTHETIC_VARIANTS)


def answer_policy(train_format: str) -> dict:
    """How predictions are read: the training format first, then the other markers; never
    the last number of the text (a model that states no marked answer did not answer)."""
    if train_format == "synthetic":
        return {"formats": ["synthetic"], "fallback": False}
    first = [] if train_format == "auto" else [train_format]
    return {"formats": first + [n for n in GOLD_FORMATS if n not in first], "fallback": False}


def build_data(opts: DataOptions, seed: int) -> dict:
    for option, value in (("--train-size", opts.train_size), ("--eval-size", opts.eval_size),
                          ("variants", opts.variants)):
        require(option, value, int, low=1)
    train = resolve_source(opts.data, preset=opts.preset, prompt_field=opts.prompt_field,
                           response_field=opts.response_field,
                           synthetic_variants=opts.variants or SYNTHETIC_VARIANTS, seed=seed, role="train")
    synthetic = train.kind == "synthetic"
    if opts.test_data:
        test = resolve_source(opts.test_data, seed=seed, synthetic_stream="test", synthetic_path_seed="reference")
    elif synthetic:
        test = resolve_source("synthetic-math", seed=seed, synthetic_stream="test", synthetic_path_seed="reference",
                              synthetic_style="broad")
    else:
        test = preset_test_source(train)
    train, test = pin_revision(train), pin_revision(test) if test is not None else None
    eval_size = opts.eval_size or (SYNTHETIC_EVAL_SIZE if synthetic else PAPER_EVAL_SIZE)
    if synthetic:
        n_train = opts.train_size or SYNTHETIC_TRAIN_SIZE
    else:
        total = count_rows(train)
        if total is not None and total < 2:
            raise DataError(f"{train.ref} has {total} rows: too few to train and hold out validation")
        # hold out eval_size rows after the training rows (at most half of a small file)
        held = min(eval_size, total // 2) if total else eval_size
        eval_size = held
        n_train = min(opts.train_size or total - held, total - held)
    if n_train <= 0:
        raise DataError("no training rows left after holding out validation rows")
    fit, splits = default_splits(train, n_train, eval_size=eval_size, test=test, seed=seed)
    return {
        "fit": fit.to_json(),
        "splits": {name: spec.to_json() for name, spec in splits.items()},
        "answer": answer_policy(train.answer_format),
    }


def build_config(*, model: str, data: DataOptions, out: str, method: str = "lora", loss: str = "sft",
                 r: int | None = None, alpha: float | None = None, dropout: float | None = None,
                 targets: list[str] | None = None, use_rslora: bool = False, trust_remote_code: bool = False,
                 seed: int = 0, eval_options: dict | None = None, **hyper) -> TrainConfig:
    m = get_finetuning_method(method)
    cfg = TrainConfig(
        out=out,
        base=resolve_base(model, trust_remote_code),
        method=m.config(r=r, alpha=alpha, dropout=dropout, targets=targets, use_rslora=use_rslora),
        data=build_data(data, seed),
        loss=loss,
        seed=seed,
        eval=eval_options or {},
        **{k: v for k, v in hyper.items() if v is not None},
    )
    return cfg.validate()
