"""A real TRL SFTTrainer run that stops itself once it over-memorizes (OvermemCallback stop_at).

The demo's data (synthetic-math, 200 training rows in the narrow annotation style, 100
validation rows) through TRL's prompt-completion format, full finetuning of the shipped
tiny model at twice the demo's learning rate: the run turns purple well before its 30
epochs, and the callback stops it two evaluated purple checkpoints later.
"""

from __future__ import annotations

import json

import pytest
import torch

from overmem.data.loaders import SplitSpec, select
from overmem.data.template import PROMPT_TEMPLATE
from overmem.models.tiny import TINY_DIR
from overmem.rundir import load_run
from overmem.stopping import last_stop
from overmem.summary import summarize
from overmem.training.setup import DataOptions, build_config

pytestmark = pytest.mark.slow
EPOCHS = 30


def _demo_rows(tmp_path):
    cfg = build_config(model="tiny", data=DataOptions("synthetic-math", train_size=200, eval_size=100),
                       out=str(tmp_path / "unused"), method="full", lr=6e-4, epochs=EPOCHS, batch_size=8,
                       micro_batch_size=8, max_len=256)
    fit = select(SplitSpec.from_json(cfg.data["fit"]))
    val = select(SplitSpec.from_json(cfg.data["splits"]["val"]))
    return fit, val


def test_trl_run_stops_itself_after_turning_purple(tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from overmem.callback import OvermemCallback
    from overmem.models.loading import load_tokenizer, resolve_base

    fit, val = _demo_rows(tmp_path)
    records = [{"prompt": PROMPT_TEMPLATE.replace("{instruction}", r["query"]), "completion": r["response"]}
               for r in fit]
    tok = load_tokenizer(resolve_base("tiny"))
    callback = OvermemCallback(tmp_path / "run", tokenizer=tok, splits={"val": val}, max_new_tokens=64,
                               batch_size=50, answer_format="synthetic", stop_at="purple", patience=2)
    torch.manual_seed(0)
    args = SFTConfig(output_dir=str(tmp_path / "out"), num_train_epochs=EPOCHS, per_device_train_batch_size=8,
                     learning_rate=6e-4, lr_scheduler_type="linear", warmup_steps=0, save_strategy="epoch",
                     logging_steps=25, report_to="none", use_cpu=True, seed=0, max_length=256, disable_tqdm=True)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(TINY_DIR), args=args,
                         train_dataset=Dataset.from_list(records), processing_class=tok, callbacks=[callback])
    trainer.train()

    run = load_run(tmp_path / "run")
    summary = summarize(run)
    stop = last_stop(run)
    assert callback.stopped and stop is not None and stop.done and stop.by == "rule"
    assert run.status == "stopped"
    # it stopped early, at a save, after `patience` evaluated purple checkpoints
    assert trainer.state.epoch < EPOCHS - 5
    assert any(e.get("overmem_stop") == callback.stopped for e in trainer.state.log_history)
    phases = {v.name: v.phase.value for v in summary.advice.phases.verdicts}
    trained = [r.name for r in summary.rows if r.checkpoint.trained]
    assert stop.checkpoint == trained[-1]
    assert [phases[n] for n in trained[-2:]] in (["purple", "purple"], ["purple", "overfit"],
                                                   ["overfit", "purple"], ["overfit", "overfit"])
    # never before the checkpoint to keep: the recommendation is saved and not over-memorized
    assert summary.advice.recommended in trained and phases[summary.advice.recommended] == "yellow"
    last = max((tmp_path / "out").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["epoch"] == trainer.state.epoch < EPOCHS
