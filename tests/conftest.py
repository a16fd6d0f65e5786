from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import make_tiny_llama, word_tokenizer

DATA = Path(__file__).parent / "data"


@pytest.fixture
def paper_run(tmp_path) -> Path:
    """A writable copy of the golden paper-shaped run."""
    dst = tmp_path / "paper_run"
    shutil.copytree(DATA / "paper_run", dst)
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
