"""The prompt template of METHOD.md (Alpaca style), used for training and evaluation."""

from __future__ import annotations

PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)

# Generation stops here: a model that keeps going starts a new made-up instruction.
STOP_MARKER = "### Instruction"


def render_prompt(instruction: str, template: str = PROMPT_TEMPLATE) -> str:
    return template.replace("{instruction}", instruction)
