"""Users' own runs: real TRL SFTTrainer output folders evaluated, judged and merged by overmem.

Two real runs with LoRA on the shipped tiny model: prompt-completion data rendered
with the Alpaca template, and conversational data through a chat template set on
the tiny tokenizer. An axolotl-shaped folder (no accuracy logged) goes the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from overmem.data import synthetic
from overmem.data.template import PROMPT_TEMPLATE
from overmem.models.tiny import TINY_DIR
from overmem_tui.cli import app
from tests.helpers import CHAT_TEMPLATE

pytestmark = pytest.mark.slow

LIMIT = 12


def _rows(stream: str, n: int, variants: int = 1) -> list[dict]:
    path_seed = "train" if stream == "train" else "reference"
    return synthetic.generate(0, stream, 0, n, path_seed, variants)


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _tokenizer(chat: bool):
    from overmem.models.loading import load_tokenizer, resolve_base

    tok = load_tokenizer(resolve_base("tiny"))
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _train(out: Path, train_records: list[dict], eval_records: list[dict], chat: bool) -> dict:
    """A real TRL SFTTrainer run; returns TRL's own tokenization of the eval rows."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(TINY_DIR)
    args = SFTConfig(output_dir=str(out), num_train_epochs=3, per_device_train_batch_size=8,
                     per_device_eval_batch_size=8, learning_rate=3e-3, eval_strategy="epoch", save_strategy="epoch",
                     logging_steps=2, report_to="none", use_cpu=True, seed=0, max_length=256, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_records),
                         eval_dataset=Dataset.from_list(eval_records), processing_class=_tokenizer(chat),
                         peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    trainer.train()
    ds = trainer.eval_dataset  # TRL's own tokens; labels are -100 outside the completion
    return {"input_ids": ds["input_ids"][:LIMIT], "labels": ds["labels"][:LIMIT]}


def _fingerprint(folder: Path) -> dict:
    """Every file of a Trainer folder outside overmem's overlay, by content hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "overmem" not in p.relative_to(folder).parts}


@pytest.fixture(scope="module")
def trl_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("trl")
    train, val, test = _rows("train", 48, 4), _rows("heldout", 24), _rows("test", 24)
    runs = {}
    # prompt-completion, the prompt rendered with overmem's Alpaca template (overmem.data.template)
    pc = [{"prompt": PROMPT_TEMPLATE.replace("{instruction}", r["query"]), "completion": r["response"]} for r in train]
    pc_val = [{"prompt": PROMPT_TEMPLATE.replace("{instruction}", r["query"]), "completion": r["response"]}
              for r in val]
    out = root / "alpaca"
    runs["alpaca"] = {"dir": out, "tokens": _train(out, pc, pc_val, chat=False),
                      "files": [f"val={_write(root / 'val.jsonl', val)}", f"test={_write(root / 'test.jsonl', test)}"],
                      "options": ["--template", "alpaca"]}
    # conversational, rendered by the tokenizer's chat template: TRL trains on conversational
    # prompt-completion rows (loss on the assistant turn); overmem reads TRL's messages rows

    def conv_pc(rows):
        return [{"prompt": [{"role": "user", "content": r["query"]}],
                 "completion": [{"role": "assistant", "content": r["response"]}]} for r in rows]

    def conv(rows):
        return [{"messages": [{"role": "user", "content": r["query"]},
                              {"role": "assistant", "content": r["response"]}]} for r in rows]

    out = root / "chat"
    runs["chat"] = {"dir": out, "tokens": _train(out, conv_pc(train), conv_pc(val), chat=True),
                    "files": [f"val={_write(root / 'val.chat.jsonl', conv(val))}",
                              f"test={_write(root / 'test.chat.jsonl', conv(test))}"],
                    "options": []}  # messages data: the chat template is the default
    return runs


def _eval(folder: Path, *extra: str):
    result = CliRunner().invoke(app, ["eval", str(folder), "--backend", "hf", "--max-new-tokens", "48",
                                      "--limit", str(LIMIT), *extra])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return result


def _recommend(folder: Path) -> dict:
    result = CliRunner().invoke(app, ["recommend", str(folder), "--json"])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return json.loads(result.stdout)


def _nll_by_hand(model, tokens: dict) -> list[float]:
    """Summed NLL of the completion tokens, from a plain forward on TRL's own tokenization."""
    out = []
    model.eval()
    for ids, labels in zip(tokens["input_ids"], tokens["labels"]):
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        out.append(-sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids)) if labels[t] != -100))
    return out


@pytest.mark.parametrize("kind", ["alpaca", "chat"])
def test_trl_folder_is_a_first_class_run(trl_runs, kind):
    run = trl_runs[kind]
    folder = run["dir"]
    before = _fingerprint(folder)
    files = [a for f in run["files"] for a in ("--split-file", f)]
    first = _eval(folder, *files, "--answer-format", "synthetic", *run["options"])
    assert "evaluated 4 checkpoint(s)" in first.output  # the base and checkpoint-6, -12, -18
    obj = _recommend(folder)
    names = [c["name"] for c in obj["checkpoints"]]
    assert names == ["ep0", "checkpoint-6", "checkpoint-12", "checkpoint-18"]
    for c in obj["checkpoints"]:
        val = c["metrics"]["val"]
        assert val["ppl_aggregate"] == "mean" and val["n"] == LIMIT and 0 <= val["acc"] <= 1
        assert c["phase"] != "unknown", c
    table = CliRunner().invoke(app, ["recommend", str(folder)]).output  # 80 columns
    assert "checkpoint-12" in table and "ppl" in table  # whole names, overmem's own columns
    assert "(trainer)" not in table  # overmem measured val and test itself: no Trainer columns
    trained = obj["checkpoints"][1:]
    assert all("mean_token_accuracy" in c["trainer_metrics"]["val"] for c in trained)  # shown, never acc
    assert obj["checkpoints"][0]["metrics"]["val"]["acc"] == 0.0  # the base has no ####: no answer
    # remembered: a second eval needs no options and finds nothing left to do
    again = _eval(folder)
    assert "evaluated 0 checkpoint(s)" in again.output
    # overmem's perplexity is the model's own NLL of exactly the tokens TRL trained on
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(TINY_DIR), str(folder / "checkpoint-6"))
    by_hand = _nll_by_hand(model, run["tokens"])
    sidecar = [json.loads(line) for line in (folder / "overmem" / "samples" / "checkpoint-6" / "val.ppl.jsonl")
               .read_text().splitlines()]
    assert [s["nll_sum"] for s in sidecar] == pytest.approx(by_hand, rel=1e-5)
    mean_ppl = sum(math.exp(s["nll_sum"] / s["n_tokens"]) for s in sidecar) / len(sidecar)
    assert obj["checkpoints"][1]["metrics"]["val"]["ppl"] == pytest.approx(mean_ppl, rel=1e-9)
    # a merge of two of its checkpoints is registered in the overlay and evaluated beside them
    merged = CliRunner().invoke(app, ["merge", "checkpoint-6", "checkpoint-18", "--run", str(folder)])
    assert merged.exit_code == 0, merged.output + (merged.stderr or "")
    _eval(folder)
    obj = _recommend(folder)
    merge = next(c for c in obj["checkpoints"] if c["name"] == "merge-checkpoint-6+checkpoint-18")
    assert merge["kind"] == "merge" and merge["metrics"]["val"]["ppl"] is not None
    config = json.loads((folder / "overmem" / "checkpoints" / merge["name"] / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == json.loads(
        (folder / "checkpoint-6" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert _fingerprint(folder) == before  # the Trainer's own files are untouched


def test_axolotl_shaped_folder_without_accuracy(trl_runs, tmp_path):
    """An output folder whose logs hold losses only (axolotl's, LLaMA-Factory's): phases say
    unknown until overmem eval measures accuracy, then follow it."""
    folder = tmp_path / "axolotl-out"
    src = trl_runs["alpaca"]["dir"]
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("overmem"))
    for state_file in folder.glob("checkpoint-*/trainer_state.json"):
        state = json.loads(state_file.read_text())
        state["log_history"] = [{k: v for k, v in e.items() if "accuracy" not in k and "entropy" not in k}
                                for e in state["log_history"]]
        state_file.write_text(json.dumps(state))
    (folder / "config.yml").write_text("base_model: tiny\nadapter: lora\n")
    before = _recommend(folder)
    assert {c["phase"] for c in before["checkpoints"]} == {"unknown"}
    assert any("overmem eval" in r for r in before["reasons"])
    files = [a for f in trl_runs["alpaca"]["files"] for a in ("--split-file", f)]
    _eval(folder, *files, "--answer-format", "synthetic", "--template", "alpaca")
    after = _recommend(folder)
    assert all(c["phase"] != "unknown" for c in after["checkpoints"])


def test_merge_adapters_outside_any_run(trl_runs, tmp_path):
    """Two PEFT adapter folders merged by path: the base comes from their adapter_config.json."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    folder = trl_runs["chat"]["dir"]
    a, b = folder / "checkpoint-6", folder / "checkpoint-12"
    result = CliRunner().invoke(app, ["merge", str(a), str(b), "--as", "full", "--out", str(tmp_path / "m"),
                                      "--run", str(tmp_path)])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    merged = load_file(str(tmp_path / "m" / "model.safetensors"))
    base = AutoModelForCausalLM.from_pretrained(TINY_DIR).state_dict()
    full = [PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(TINY_DIR), str(p)).merge_and_unload()
            .state_dict() for p in (a, b)]
    assert merged and merged.keys() == base.keys()  # every tensor of the model, none dropped
    for key, value in merged.items():
        expected = base[key] + 0.5 * (full[0][key] - base[key]) + 0.5 * (full[1][key] - base[key])
        assert torch.allclose(value, expected, atol=1e-6), key
    refused = CliRunner().invoke(app, ["merge", str(a), str(b), "--run", str(tmp_path)])
    assert refused.exit_code == 2 and "need --out" in refused.stderr
