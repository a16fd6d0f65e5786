from __future__ import annotations

import os

# The suite runs on the CPU: its exactness checks assume float32 on the CPU and its 2-rank tests
# one gloo process per rank. Hide every GPU before anything imports torch (vLLM reads it too);
# subprocesses inherit it. GPU checks live in benchmarks/gpu_check.sh.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.helpers import make_tiny_llama, word_tokenizer  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture
def paper_run(tmp_path) -> Path:
    """A writable copy of the golden paper-shaped run."""
    dst = tmp_path / "paper_run"
    shutil.copytree(DATA / "paper_run", dst)
    return dst


@pytest.fixture(scope="session")
def trained_source(tmp_path_factory) -> Path:
    """One tiny LoRA run for the whole session, as training left it (ep0 = the base, ep1, ep2;
    16 training rows, 6 per eval split). Never written to: tests take copies (trained_run)."""
    from overmem.training.setup import DataOptions, build_config
    from overmem.training.trainer import train

    out = tmp_path_factory.mktemp("shared_run") / "trained"
    train(build_config(model="tiny", data=DataOptions("synthetic-math", train_size=16, eval_size=6), out=str(out),
                       method="lora", r=8, alpha=16, epochs=2, batch_size=8, micro_batch_size=8, lr=3e-3,
                       max_len=256))
    return out


@pytest.fixture(scope="session")
def evaluated_source(tmp_path_factory, trained_source) -> Path:
    """The session's run after ``overmem eval`` (hf; ppl and acc on train, val and test; 24 new
    tokens). Never written to: tests take copies (evaluated_run)."""
    from overmem.evaluation.runner import EvalOptions, Evaluator

    out = tmp_path_factory.mktemp("shared_run") / "evaluated"
    shutil.copytree(trained_source, out)
    Evaluator(out, EvalOptions(backend="hf", max_new_tokens=24, batch_size=8)).evaluate_pending()
    return out


@pytest.fixture
def trained_run(trained_source, tmp_path) -> Path:
    """A private copy of the session's run as training left it (nothing evaluated)."""
    dst = tmp_path / "trained_run"
    shutil.copytree(trained_source, dst)
    return dst


@pytest.fixture
def evaluated_run(evaluated_source, tmp_path) -> Path:
    """A private copy of the session's run, trained and evaluated."""
    dst = tmp_path / "evaluated_run"
    shutil.copytree(evaluated_source, dst)
    return dst


@pytest.fixture(scope="session")
def toy_llama(tmp_path_factory) -> Path:
    """A random tiny Llama with a toy word tokenizer."""
    return make_tiny_llama(tmp_path_factory.mktemp("toy") / "model", word_tokenizer())


@pytest.fixture(scope="session")
def trainer_output(tmp_path_factory, toy_llama) -> Path:
    """The output folder of a real transformers.Trainer run (2 eval sets, accuracy metric).

    Nobody calls save_state, so only checkpoint-N/trainer_state.json exist, as in
    most real runs.
    """
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    out = tmp_path_factory.mktemp("hf") / "trainer_out"
    rng = np.random.default_rng(0)

    def dataset(n: int) -> Dataset:
        ids = rng.integers(4, 60, size=(n, 12)).tolist()
        return Dataset.from_dict({"input_ids": ids, "labels": ids, "attention_mask": [[1] * 12] * n})

    def accuracy(pred):
        logits, labels = pred.predictions, pred.label_ids
        guess = logits[:, :-1].argmax(-1)
        return {"accuracy": float((guess == labels[:, 1:]).mean())}

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(toy_llama)
    args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=3,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        learning_rate=5e-3,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_steps=2,
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset(32),
        eval_dataset={"val": dataset(16), "test": dataset(16)},
        compute_metrics=accuracy,
    )
    trainer.train()
    return out
