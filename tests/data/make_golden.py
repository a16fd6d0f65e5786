"""Regenerate the golden run directories under tests/data (run by hand, output committed).

``paper_run``: an 11-point LoRA trajectory shaped like the paper's Figure 1
(val/test ppl fall to a minimum at ep3, then climb several-fold while accuracy
stays flat), with n = 1319 per split. Expected decisions are asserted in
tests/test_advice.py.
"""

import json
import shutil
from pathlib import Path

HERE = Path(__file__).parent

VAL_PPL = [9.0, 3.6, 3.2, 3.1, 3.3, 3.9, 5.2, 7.5, 10.1, 12.4, 14.0]
VAL_ACC = [0.12, 0.60, 0.71, 0.74, 0.75, 0.755, 0.76, 0.76, 0.765, 0.76, 0.764]
TEST_PPL = [8.0, 3.4, 3.0, 2.9, 3.1, 3.6, 4.8, 6.9, 9.5, 11.8, 13.1]
TEST_ACC = [0.10, 0.58, 0.70, 0.745, 0.752, 0.756, 0.758, 0.761, 0.764, 0.76, 0.762]
TRAIN_PPL = [9.0, 3.0, 2.2, 1.7, 1.4, 1.2, 1.1, 1.05, 1.03, 1.02, 1.01]


def write_paper_run(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    (root / "checkpoints").mkdir(parents=True)
    info = {
        "schema_version": 1,
        "status": "finished",
        "base_model": {"id": "meta-llama/Llama-3.1-8B", "path": None},
        "method": {"name": "lora", "r": 64, "alpha": 128},
        "loss": "sft",
        "hyperparameters": {"lr": 2e-4, "epochs": 10, "batch_size": 128},
        "data": {"preset": "metamathqa"},
        "prompt_template": "",
        "seed": 0,
        "created": 1700000000.0,
        "updated": 1700000000.0,
        "overmem_version": "0.1.0",
        "notes": [],
    }
    (root / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    lines = []
    t = 1700000000.0
    for ep in range(11):
        name = f"ep{ep}"
        if ep > 0:
            folder = root / "checkpoints" / name
            folder.mkdir()
            (folder / "checkpoint.json").write_text(
                json.dumps({"schema_version": 1, "name": name, "kind": "adapter", "epoch": ep,
                            "step": ep * 781, "created": t + ep, "parents": [], "weights": []}) + "\n"
            )
        for split, ppl, acc in (("train", TRAIN_PPL, None), ("val", VAL_PPL, VAL_ACC), ("test", TEST_PPL, TEST_ACC)):
            lines.append({"type": "metric", "checkpoint": name, "split": split, "metric": "ppl",
                          "aggregate": "mean", "value": ppl[ep], "n": 1319, "time": t + ep})
            if acc is not None:
                lines.append({"type": "metric", "checkpoint": name, "split": split, "metric": "acc",
                              "aggregate": "mean", "value": acc[ep], "n": 1319, "time": t + ep})
        lines.append({"type": "train", "step": ep * 781, "epoch": float(ep), "loss": 1.0 / (ep + 1),
                      "lr": 2e-4, "total_steps": 7810, "tokens_per_s": None, "time": t + ep})
    (root / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


if __name__ == "__main__":
    write_paper_run(HERE / "paper_run")
