"""OvermemCallback in a TRL script: every row shape --split-file takes, and its results in the
Trainer's own loggers (report_to) at each checkpoint's step.

One real TRL SFTTrainer run (full finetuning of the shipped tiny model on 8 conversational
rows, 4 epochs of 4 steps, TensorBoard on; seconds) is shared by the tests that read its
output; the row tests need no training (on_train_begin alone writes the run's split definitions).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from overmem.callback import LOG_PREFIX, PHASE_CODES, OvermemCallback
from overmem.data import synthetic
from overmem.data.loaders import SplitSpec, resolve_source, select
from overmem.data.template import PromptFormat
from overmem.errors import DataError
from overmem.evaluation.definitions import default_format
from overmem.models.tiny import TINY_DIR
from overmem.phases import Phase
from overmem.rundir import load_run
from overmem.rundir.hf_trainer import parse_eval_entry, read_trainer_folder
from overmem.summary import summarize
from tests.helpers import CHAT_TEMPLATE, read_jsonl

EPOCHS = 4
TB_TAG = "train/" + LOG_PREFIX  # the integrations put every key that is not an eval_ one under train/


def _tokenizer(chat: bool = True):
    from overmem.models.loading import load_tokenizer, resolve_base

    tok = load_tokenizer(resolve_base("tiny"))
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _pairs(stream: str, n: int) -> list[dict]:
    return synthetic.generate(0, stream, 0, n, "train" if stream == "train" else "reference", 1)


def messages(rows: list[dict], system: str | None = None) -> list[dict]:
    head = [{"role": "system", "content": system}] if system else []
    return [{"messages": head + [{"role": "user", "content": r["query"]},
                                 {"role": "assistant", "content": r["response"]}]} for r in rows]


def prompt_completion_turns(rows: list[dict]) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": r["query"]}],
             "completion": [{"role": "assistant", "content": r["response"]}]} for r in rows]


def prompt_completion_text(rows: list[dict]) -> list[dict]:
    return [{"prompt": r["query"], "completion": r["response"]} for r in rows]


def fields(rows: list[dict]) -> list[dict]:
    return [{"query": r["query"], "response": r["response"], "id": i} for i, r in enumerate(rows)]


def _split_file_rows(tmp_path: Path, name: str, rows: list[dict]) -> tuple[list[dict], SplitSpec]:
    """What ``overmem eval --split-file NAME=F`` reads from the same rows written to a jsonl."""
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = SplitSpec(resolve_source(str(path), answer_format="synthetic"))
    return select(spec), spec


def _begin(run_dir: Path, tmp_path: Path, splits: dict, tokenizer) -> None:
    """The callback's on_train_begin as a Trainer calls it (the run's split definitions are written)."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), report_to="none", use_cpu=True)
    cb = OvermemCallback(run_dir, tokenizer=tokenizer, splits=splits, base_model="tiny", answer_format="synthetic")
    cb.on_train_begin(args, TrainerState(), TrainerControl(), model=None)


# -- rows -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape,template", [
    ("messages", "chat"), ("messages-dataset", "chat"), ("prompt-completion-turns", "chat"),
    ("prompt-completion-text", "raw"), ("fields", "alpaca")])
def test_every_row_shape_reads_as_a_split_file_would(tmp_path, shape, template):
    """The callback's split is read back through the --split-file loader as the same
    (query, reference, answer) rows, and the run renders them with the format eval picks."""
    from datasets import Dataset

    pairs = _pairs("heldout", 3)
    system = "Answer with #### The result is n ."
    rows = {"messages": messages(pairs, system), "messages-dataset": messages(pairs, system),
            "prompt-completion-turns": prompt_completion_turns(pairs),
            "prompt-completion-text": prompt_completion_text(pairs), "fields": fields(pairs)}[shape]
    given = Dataset.from_list(rows) if shape.endswith("dataset") else rows
    _begin(tmp_path / "run", tmp_path, {"val": given}, _tokenizer())

    run = load_run(tmp_path / "run", strict=True)
    ours = select(SplitSpec.from_json(run.info.data["splits"]["val"]))
    theirs, spec = _split_file_rows(tmp_path, "val", rows)
    assert ours == theirs
    turns = {"messages": [[{"role": "system", "content": system}, {"role": "user", "content": p["query"]}]
                          for p in pairs],
             "prompt-completion-turns": [[{"role": "user", "content": p["query"]}] for p in pairs]}
    queries = turns.get(shape.removesuffix("-dataset"), [p["query"] for p in pairs])
    assert [(r["query"], r["response"], r["answer"]) for r in ours] == \
        [(q, p["response"], p["answer"]) for q, p in zip(queries, pairs)]
    assert all(r["answer"] is not None for r in ours)  # graded: accuracy is measured on them
    fmt = PromptFormat.from_json(run.info.prompt_template)
    assert fmt.kind == template and fmt == default_format({"val": spec})
    assert (tmp_path / "run" / "data" / "val.jsonl").is_file()


def test_a_row_of_no_known_shape_is_one_error_naming_the_split():
    rows = [{"question": "What is 2 plus 3 ?", "answer": "#### The result is 5 ."}]
    with pytest.raises(DataError, match=r"split 'val'.*missing field\(s\) \['query', 'response'\]"):
        OvermemCallback("unused", splits={"val": rows})
    no_reference = messages(_pairs("heldout", 2))
    no_reference[1]["messages"] = no_reference[1]["messages"][:1]  # the user turn alone
    with pytest.raises(DataError, match="split 'test' row 1: no assistant turn"):
        OvermemCallback("unused", splits={"val": fields(_pairs("heldout", 2)), "test": no_reference})
    with pytest.raises(DataError, match="split 'val' has no rows"):
        OvermemCallback("unused", splits={"val": []})
    with pytest.raises(DataError, match="split 'val': give its rows as a list"):
        OvermemCallback("unused", splits={"val": fields(_pairs("heldout", 1))[0]})


def test_chat_rows_need_a_chat_template_before_training_starts(tmp_path):
    with pytest.raises(DataError, match="this tokenizer has none"):
        _begin(tmp_path / "run", tmp_path, {"val": messages(_pairs("heldout", 2))}, _tokenizer(chat=False))
    assert not (tmp_path / "run" / "run.json").exists()


# -- a real TRL run with TensorBoard ------------------------------------------------------
@pytest.fixture(scope="module")
def trl_run(tmp_path_factory):
    """A TRL SFTTrainer run on 8 messages rows, reporting to TensorBoard, with OvermemCallback
    evaluating a messages split (train) and a prompt/completion-turns split (val) at each epoch."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    root = tmp_path_factory.mktemp("callback")
    train, heldout = _pairs("train", 8), _pairs("heldout", 4)
    splits = {"train": messages(train), "val": prompt_completion_turns(heldout)}
    tok = _tokenizer()
    cb = OvermemCallback(root / "run", tokenizer=tok, splits=splits, max_new_tokens=64, answer_format="synthetic")
    torch.manual_seed(0)
    args = SFTConfig(output_dir=str(root / "trainer"), num_train_epochs=EPOCHS, per_device_train_batch_size=2,
                     learning_rate=3e-3, save_strategy="epoch", logging_steps=1, report_to=["tensorboard"],
                     use_cpu=True, seed=0, max_length=256, disable_tqdm=True)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(TINY_DIR), args=args,
                         train_dataset=Dataset.from_list(messages(train)), processing_class=tok, callbacks=[cb])
    trainer.train()
    trainer.save_state()  # the top trainer_state.json: every entry, the last checkpoint's results too
    return {"root": root, "run": root / "run", "trainer": root / "trainer", "splits": splits,
            "history": list(trainer.state.log_history)}


def _scalars(trainer_dir: Path) -> dict[str, dict[int, float]]:
    """Every TensorBoard scalar the run wrote: tag -> step -> value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = {p.parent for p in trainer_dir.rglob("events.out.tfevents.*")}
    assert len(folders) == 1, folders
    events = EventAccumulator(str(folders.pop()), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def _phase_then(run, checkpoint, split: str) -> Phase:
    """The phase overmem gives ``checkpoint`` on ``split`` from the records up to it (what the
    run held when it was evaluated: later checkpoints can move the best, and the phase)."""
    kept = tuple(c for c in run.checkpoints if c.step <= checkpoint.step)
    names = {c.name for c in kept}
    then = replace(run, checkpoints=kept, metrics=tuple(m for m in run.metrics if m.checkpoint in names))
    return summarize(then, split).advice.phases.of(checkpoint.name).phase


@pytest.mark.slow
def test_results_reach_tensorboard_at_each_checkpoints_step(trl_run):
    run = load_run(trl_run["run"], strict=True)
    scalars = _scalars(trl_run["trainer"])
    trained = [c for c in run.checkpoints if c.trained]
    assert [c.name for c in trained] == [f"ep{i}" for i in range(1, EPOCHS + 1)]
    steps = {c.step for c in trained}
    assert len(steps) == EPOCHS and all((trl_run["trainer"] / f"checkpoint-{s}").is_dir() for s in steps)
    for split in ("train", "val"):
        for metric in ("ppl", "acc", "phase"):
            assert set(scalars[f"{TB_TAG}{split}/{metric}"]) == steps, (split, metric)  # one per save, nothing else
        for c in trained:
            mean = {m.metric: m.value for m in run.metrics
                    if (m.checkpoint, m.split, m.aggregate) == (c.name, split, "mean") and m.probe is None}
            assert set(mean) == {"ppl", "acc"}
            for metric in ("ppl", "acc"):
                logged = scalars[f"{TB_TAG}{split}/{metric}"][c.step]
                assert logged == pytest.approx(mean[metric], rel=1e-6, abs=1e-7), (c.name, split, metric)
            phase = _phase_then(run, c, split)
            assert scalars[f"{TB_TAG}{split}/phase"][c.step] == PHASE_CODES[phase], (c.name, split)
    # the same entries in the Trainer's log_history, exactly as metrics.jsonl holds them
    entries = [e for e in trl_run["history"] if any(k.startswith(LOG_PREFIX) for k in e)]
    assert [e["step"] for e in entries] == sorted(steps)
    for entry in entries:
        name = next(c.name for c in trained if c.step == entry["step"])
        for m in run.metrics:
            if m.checkpoint == name and m.aggregate == "mean" and m.probe is None:
                assert entry[f"{LOG_PREFIX}{m.split}/{m.metric}"] == m.value
        assert parse_eval_entry(entry) == []  # never read as a Trainer eval number
    # the Trainer's own training loss reached TensorBoard beside them, untouched
    assert len(scalars["train/loss"]) == EPOCHS * 4


def test_phase_codes_follow_the_phase_order():
    assert [PHASE_CODES[p] for p in (Phase.BLACK, Phase.YELLOW, Phase.PURPLE, Phase.OVERFIT, Phase.UNKNOWN)] == \
        [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_evaluated_rows_are_the_split_file_rows(trl_run, tmp_path):
    """The rows the evaluator scored (samples/_splits) are those --split-file reads from the same
    rows, and chat turns were rendered with the tokenizer's chat template."""
    run = load_run(trl_run["run"], strict=True)
    specs = {}
    for split, rows in trl_run["splits"].items():
        theirs, specs[split] = _split_file_rows(tmp_path, split, rows)
        scored = read_jsonl(trl_run["run"] / "samples" / "_splits" / f"{split}.rows.jsonl")
        assert [(r["query"], r["response"], r["answer"]) for r in scored] == \
            [(r["query"], r["response"], r["answer"]) for r in theirs]
        assert all(isinstance(r["query"], list) for r in scored)  # chat turns
    assert PromptFormat.from_json(run.info.prompt_template) == default_format(specs) == PromptFormat.parse("chat")


@pytest.mark.slow
def test_the_trainer_folder_read_back_shows_no_overmem_entry_as_a_trainer_metric(trl_run, tmp_path):
    folder = tmp_path / "trainer"
    shutil.copytree(trl_run["trainer"], folder, ignore=shutil.ignore_patterns("runs", "*.safetensors", "*.pt",
                                                                              "*.pth", "*.bin"))
    state = json.loads((folder / "trainer_state.json").read_text())
    ours = [e for e in state["log_history"] if any(k.startswith(LOG_PREFIX) for k in e)]
    assert len(ours) == EPOCHS  # trainer_state.json holds them
    read = read_trainer_folder(folder)
    assert read.problems == ()
    assert not [m for m in read.metrics if "overmem" in m.metric or "overmem" in m.split]
    # the same as the folder without them: they change nothing overmem reads
    state["log_history"] = [e for e in state["log_history"] if e not in ours]
    (folder / "trainer_state.json").write_text(json.dumps(state))
    without = read_trainer_folder(folder)
    assert (read.metrics, read.train_logs, read.checkpoints) == (without.metrics, without.train_logs,
                                                                 without.checkpoints)
    assert len(read.train_logs) == EPOCHS * 4


# -- the Trainer found, or not --------------------------------------------------------
class Recorder:
    """A logger callback: what on_log received, at which step."""

    def __init__(self):
        self.logs = []

    def on_save(self, args, state, control, **kwargs):
        return None

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, dict(logs)))


def _paper_save(paper_run, tmp_path, name: str):
    """A callback on the golden paper-shaped run at checkpoint ``name``'s save (nothing to
    evaluate: its records are there already), with what a Trainer would hand it."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    ckpt = load_run(paper_run).checkpoint(name)
    cb = OvermemCallback(paper_run, splits={"val": fields(_pairs("heldout", 1))})
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), save_strategy="epoch", report_to="none",
                             use_cpu=True)
    state = TrainerState(epoch=ckpt.epoch, global_step=ckpt.step)
    return cb, args, state, TrainerControl()


def test_a_trainers_other_callbacks_get_the_results(paper_run, tmp_path):
    from transformers.trainer_callback import CallbackHandler

    run = load_run(paper_run)
    cb, args, state, control = _paper_save(paper_run, tmp_path, "ep8")
    recorder = Recorder()
    handler = CallbackHandler([cb, recorder], model=None, processing_class=None, optimizer=None, lr_scheduler=None)
    handler.on_save(args, state, control)
    expected = {f"{LOG_PREFIX}{m.split}/{m.metric}": m.value for m in run.metrics
                if m.checkpoint == "ep8" and m.aggregate == "mean"}
    phases = {split: summarize(run, split).advice.phases.of("ep8").phase for split in ("train", "val", "test")}
    assert phases == {"train": Phase.UNKNOWN, "val": Phase.PURPLE, "test": Phase.PURPLE}  # train: ppl only
    expected.update({f"{LOG_PREFIX}{split}/phase": PHASE_CODES[p] for split, p in phases.items()})
    step = run.checkpoint("ep8").step
    assert recorder.logs == [(step, expected)]
    assert state.log_history == [{**expected, "epoch": 8.0, "step": step}]
    assert load_run(paper_run).metrics == run.metrics  # our own on_log recorded nothing of it


def test_without_a_trainer_nothing_is_logged_and_that_is_said_once(paper_run, tmp_path, caplog):
    cb, args, state, control = _paper_save(paper_run, tmp_path, "ep3")
    with caplog.at_level(logging.WARNING, logger="overmem"):
        cb.on_save(args, state, control)  # a loop of one's own calls it: no CallbackHandler on the stack
        cb.on_save(args, state, control)
    said = [r.getMessage() for r in caplog.records if "no transformers Trainer" in r.getMessage()]
    assert len(said) == 1 and "metrics.jsonl" in said[0]
    assert state.log_history == []
