"""How a query becomes a prompt: the Alpaca template (``PROMPT_TEMPLATE`` below), the model's own chat
template, the query as is, or a template text of the user's.

A run records its format (``PromptFormat.to_json``) and every command renders
prompts from it the same way: training, evaluation, probes, the demo and
OvermemCallback. ``encoding.py`` turns the rendered text into token ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)

# Generation stops here: a model that keeps going starts a new made-up instruction.
STOP_MARKER = "### Instruction"

TEMPLATE_KINDS = {
    "alpaca": "the Alpaca instruction template (the default for overmem's own runs)",
    "chat": "the tokenizer's own chat template (apply_chat_template), with --system if given",
    "raw": "the query as it is (data whose prompts are already rendered)",
}


@dataclass(frozen=True)
class PromptFormat:
    """``kind`` alpaca | chat | raw | text; ``text`` holds ``{instruction}`` (alpaca, text)."""

    kind: str = "alpaca"
    text: str = PROMPT_TEMPLATE
    system: str | None = None

    @classmethod
    def parse(cls, value: str | None, system: str | None = None) -> "PromptFormat":
        """A --template value: a kind, or the path of a file whose text holds {instruction}."""
        from overmem.errors import UsageError

        value = value or "alpaca"
        if value in TEMPLATE_KINDS:
            return cls(value, PROMPT_TEMPLATE if value == "alpaca" else "", system)
        path = Path(value).expanduser()
        if not path.is_file():
            raise UsageError(f"--template takes {', '.join(TEMPLATE_KINDS)} or a file holding {{instruction}}; "
                             f"{value} is neither")
        text = path.read_text(encoding="utf-8")
        if "{instruction}" not in text:
            raise UsageError(f"{path} has no {{instruction}} placeholder")
        return cls("text", text, system)

    def to_json(self) -> str | dict:
        if self.kind == "alpaca" and self.text == PROMPT_TEMPLATE and not self.system:
            return PROMPT_TEMPLATE  # the form run.json always had
        return {"kind": self.kind, "text": self.text, "system": self.system}

    @classmethod
    def from_json(cls, obj) -> "PromptFormat":
        if isinstance(obj, PromptFormat):
            return obj
        if not obj:
            return cls()
        if isinstance(obj, str):
            obj = {"kind": "alpaca" if obj == PROMPT_TEMPLATE else "text", "text": obj}
        kind, text, system = (obj.get("kind", "alpaca"), obj.get("text") or "", obj.get("system")) \
            if isinstance(obj, dict) else (None, None, None)
        if kind not in (*TEMPLATE_KINDS, "text") or not isinstance(text, str) or \
                not (system is None or isinstance(system, str)) or \
                kind in ("alpaca", "text") and "{instruction}" not in text or not isinstance(obj.get("kind"), str):
            from overmem.errors import DataError

            raise DataError(f"the prompt format {str(obj)[:80]!r} is not one overmem knows "
                            f"({', '.join(TEMPLATE_KINDS)}, or a text holding {{instruction}})")
        return cls(kind, text, system)

    @property
    def stops(self) -> tuple[str, ...]:
        """Text at which greedy generation stops, besides the end-of-sequence token."""
        return (STOP_MARKER,) if self.kind in ("alpaca", "text") and STOP_MARKER in self.text else ()

    def describe(self) -> str:
        if self.kind == "text":
            return "a template text of the run's"
        return TEMPLATE_KINDS[self.kind] + (f' (system: "{self.system}")' if self.system else "")

    def messages(self, query) -> list[dict]:
        """The chat turns of a query (text, or turns as TRL's conversational data holds them)."""
        turns = list(query) if isinstance(query, list) else [{"role": "user", "content": query}]
        if self.system and not (turns and turns[0].get("role") == "system"):
            turns = [{"role": "system", "content": self.system}] + turns
        return turns

    def render(self, query) -> str:
        """The prompt text of a non-chat format."""
        if isinstance(query, list):  # turns under a text format: the last user turn is the instruction
            users = [t.get("content", "") for t in query if t.get("role") == "user"]
            query = users[-1] if users and self.kind != "raw" else "\n".join(t.get("content", "") for t in query)
        if self.kind == "raw":
            return query
        return self.text.replace("{instruction}", query)


def render_prompt(instruction: str, template=PROMPT_TEMPLATE) -> str:
    """The prompt text of a non-chat format (``template``: a PromptFormat or its JSON form)."""
    return PromptFormat.from_json(template).render(instruction)
