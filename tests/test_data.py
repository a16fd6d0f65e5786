"""Data sources, presets, split definitions, the synthetic generator, answers, encoding."""

from __future__ import annotations

import json

import pytest

from overmem.data import synthetic
from overmem.data.loaders import DataSource, SplitSpec, load_rows, preset_test_source, resolve_source, select
from overmem.errors import DataError
from overmem.training.setup import DataOptions, build_data


def test_synthetic_is_deterministic_and_has_several_paths():
    a, b = synthetic.problem(0, "train", 7), synthetic.problem(0, "train", 7)
    assert a == b
    assert synthetic.problem(1, "train", 7) != a
    distinct = [len(set(synthetic.problem(0, "train", i).paths)) for i in range(50)]
    assert min(distinct) >= 2 and sum(distinct) / len(distinct) > 4
    for i in range(200):
        p = synthetic.problem(0, "test", i)
        assert all(int(w) <= synthetic.MAX_NUMBER for t in (p.question, *p.paths) for w in t.split() if w.isdigit())
        assert 0 <= p.answer <= synthetic.MAX_NUMBER


def test_synthetic_references_use_another_path_than_training():
    train = synthetic.generate(0, "train", 0, 100, "train")
    ref = synthetic.generate(0, "train", 0, 100, "reference")
    assert [r["query"] for r in train] == [r["query"] for r in ref]
    assert sum(a["response"] != b["response"] for a, b in zip(train, ref)) > 60
    assert all(r["response"].endswith(f"#### The result is {r['answer']} .") for r in train)


def test_pretraining_format_never_shows_the_finetuning_format():
    import random

    text = synthetic.pretrain_text(synthetic.problem(0, "pretrain", 3, style=synthetic.BROAD), random.Random(0))
    assert "####" not in text and "### Instruction" not in text and text.startswith("Question :")


def test_finetuning_wording_is_narrower_than_pretraining():
    def words(style):
        out = set()
        for i in range(300):
            for path in synthetic.problem(0, "x", i, style=style).paths:
                out |= set(path.split())
        return out

    narrow, broad = words(synthetic.NARROW), words(synthetic.BROAD)
    assert narrow < broad and {"Therefore", "owns", "net", "fewer"} <= broad - narrow
    # the shipped tokenizer covers every word either style can emit
    from overmem.models.loading import load_tokenizer, resolve_base

    vocab = load_tokenizer(resolve_base("tiny")).get_vocab()
    assert broad <= set(vocab)


def test_default_splits_are_disjoint_and_recorded(tmp_path):
    data = build_data(DataOptions("synthetic-math", train_size=30, eval_size=10), seed=0)
    rows = {name: select(SplitSpec.from_json(spec)) for name, spec in data["splits"].items()}
    fit = select(SplitSpec.from_json(data["fit"]))
    assert len(fit) == 30 and {len(r) for r in rows.values()} == {10}
    fit_q = {r["query"] for r in fit}
    assert {r["query"] for r in rows["train"]} <= fit_q  # a sample of the training set
    assert not {r["query"] for r in rows["test"]} & fit_q
    assert data["answer"] == {"formats": ["synthetic"], "fallback": False}
    json.dumps(data)  # recorded in run.json as is


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_local_files_load_with_fields(tmp_path, fmt):
    import datasets

    records = [{"question": f"q{i}", "answer": f"work {i} #### {i}"} for i in range(12)]
    path = tmp_path / f"d.{fmt}"
    ds = datasets.Dataset.from_list(records)
    getattr(ds, {"jsonl": "to_json", "csv": "to_csv", "parquet": "to_parquet"}[fmt])(str(path))
    source = resolve_source(str(path), preset="gsm8k")
    assert source.kind == "file" and source.prompt_field == "question"
    rows = load_rows(source, 2, 3)
    assert rows == [{"query": f"q{i}", "response": f"work {i} #### {i}", "answer": str(i)} for i in (2, 3, 4)]
    data = build_data(DataOptions(str(path), preset="gsm8k", eval_size=4), seed=1)
    assert data["fit"]["count"] == 8 and data["splits"]["val"]["start"] == 8
    # the training format first, then the other markers; never the last number of the text
    assert data["answer"] == {"formats": ["gsm8k", "metamath", "boxed"], "fallback": False}


def test_folder_and_errors(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for k in range(2):
        (folder / f"part{k}.jsonl").write_text(
            "".join(json.dumps({"query": f"q{k}{i}", "response": "The answer is: 3"}) + "\n" for i in range(3)))
    rows = load_rows(resolve_source(str(folder), preset="metamathqa"))
    assert len(rows) == 6 and rows[0]["answer"] == "3"
    with pytest.raises(DataError, match="missing field"):
        load_rows(resolve_source(str(folder), prompt_field="instruction"))
    with pytest.raises(DataError, match="no such file"):
        resolve_source(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="unknown data preset"):
        resolve_source("x", preset="nope")
    (tmp_path / "bad.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        load_rows(DataSource("file", str(tmp_path / "bad.txt")))


def test_hub_ids_resolve_without_loading():
    source = resolve_source("gsm8k")
    assert (source.kind, source.ref, source.hub_config, source.hub_split) == ("hub", "openai/gsm8k", "main", "test")
    assert resolve_source("meta-math/MetaMathQA", preset="metamathqa").answer_format == "metamath"


def test_gsm8k_trains_on_its_train_split_and_evaluates_on_its_test_split():
    train = resolve_source("gsm8k", role="train")
    assert (train.kind, train.ref, train.hub_config, train.hub_split) == ("hub", "openai/gsm8k", "main", "train")
    test = preset_test_source(train)
    assert (test.kind, test.ref, test.hub_config, test.hub_split) == ("hub", "openai/gsm8k", "main", "test")
    assert (test.prompt_field, test.response_field, test.answer_format) == ("question", "answer", "gsm8k")
    # MetaMathQA has no test split of its own: the paper tests it on GSM8K's
    assert preset_test_source(resolve_source("metamathqa", role="train")) == test
    # training on the test split brings no test set (it would test on what it trains on)
    assert preset_test_source(resolve_source("gsm8k", hub_split="test")) is None
    assert preset_test_source(resolve_source("someone/else")) is None
    with pytest.raises(ValueError, match="role"):
        resolve_source("gsm8k", role="test")


@pytest.mark.parametrize("data,test_ref", [("gsm8k", "openai/gsm8k"), ("metamathqa", "openai/gsm8k")])
def test_the_train_command_splits_a_hub_preset_without_loading(monkeypatch, data, test_ref):
    """What `overmem train --data gsm8k` records: train and val from the train split, test
    from the test split (the hub is out of reach here: its row count is stubbed)."""
    import overmem.training.setup as setup

    monkeypatch.setattr(setup, "count_rows", lambda source: 7473)
    monkeypatch.setattr(setup, "pin_revision", lambda source: source)
    recorded = build_data(DataOptions(data), seed=3)
    fit, splits = SplitSpec.from_json(recorded["fit"]), {k: SplitSpec.from_json(v) for k, v in recorded["splits"].items()}
    assert fit.source.hub_split == "train" and (fit.start, fit.count) == (0, 7473 - 1319)
    assert splits["train"].source.hub_split == "train" and splits["train"].sample == 1319
    assert splits["val"].source.hub_split == "train" and (splits["val"].start, splits["val"].count) == (7473 - 1319, 1319)
    assert (splits["test"].source.ref, splits["test"].source.hub_split) == (test_ref, "test")
    assert (splits["test"].start, splits["test"].count, splits["test"].sample) == (0, None, 1319)


def test_a_local_file_with_a_preset_brings_no_test_set(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) + "\n" for i in range(10)))
    assert "test" not in build_data(DataOptions(str(path), preset="gsm8k", eval_size=4), seed=0)["splits"]


def test_encoding_masks_the_prompt_and_pads_to_a_multiple():
    from overmem.data.encoding import IGNORE, collate, encode
    from overmem.models.loading import load_tokenizer, resolve_base

    tok = load_tokenizer(resolve_base("tiny"))
    e = encode(tok, "Tom has 3 apples . How many apples does Tom have now ?", "#### 3")
    assert e.input_ids[0] == tok.bos_token_id and e.input_ids[-1] == tok.eos_token_id
    assert e.n_response == 3  # "####", "3", EOS
    short = encode(tok, "Tom has 3 apples .", "#### 3")
    ids, mask, labels = collate([e, short], tok.pad_token_id, multiple=16)
    assert ids.shape[1] % 16 == 0 and ids.shape[1] >= len(e.input_ids)
    assert (labels[0] != IGNORE).sum() == 3 and (labels[1] != IGNORE).sum() == 3
    assert labels[0, e.n_prompt] == e.input_ids[e.n_prompt]
    left, lmask, _ = collate([short, e], tok.pad_token_id, multiple=1, left=True)
    assert lmask[0, 0] == 0 and lmask[0, -1] == 1 and left[0, -1] == tok.eos_token_id
