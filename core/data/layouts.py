"""How a dataset record holds its prompt and reference: two text fields, TRL's conversational
``messages`` (the last assistant turn is the reference, the turns before it the prompt), or
TRL's ``prompt``/``completion`` (text or turns). ``auto`` picks by the columns present."""

from __future__ import annotations

from overmem.errors import DataError

LAYOUTS = ("auto", "fields", "messages", "prompt-completion")


def detect_layout(source, columns: list[str]) -> str:
    """The layout of a source's records (see DataSource), or DataError naming what is missing."""
    if source.layout not in LAYOUTS:
        raise DataError(f"unknown data layout {source.layout!r} (layouts: {', '.join(LAYOUTS)})")
    if source.layout != "auto":
        needed = {"fields": [source.prompt_field, source.response_field], "messages": ["messages"],
                  "prompt-completion": ["prompt", "completion"]}[source.layout]
    elif {source.prompt_field, source.response_field} <= set(columns):
        return "fields"
    elif "messages" in columns:
        return "messages"
    elif {"prompt", "completion"} <= set(columns):
        return "prompt-completion"
    else:
        needed = [source.prompt_field, source.response_field]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(f"{source.ref}: missing field(s) {missing}; columns are {columns} (set --prompt-field/"
                        "--response-field, or give TRL's messages or prompt/completion columns)")
    return source.layout


def _text_of(turn: dict) -> str:
    content = turn.get("content")
    if isinstance(content, list):  # multimodal-style content parts: keep the text ones
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def _last_assistant(messages: list, where: str) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], dict) and messages[i].get("role") == "assistant":
            return i
    raise DataError(f"{where}: no assistant turn to use as the reference")


def _clean_turns(turns: list) -> list[dict]:
    return [{"role": t.get("role"), "content": _text_of(t)} for t in turns if isinstance(t, dict)]


def normalize_record(source, layout: str, rec: dict, where: str) -> tuple:
    """(query, response) of one record: the query is text, or a list of chat turns."""
    if layout == "fields":
        query, response = rec[source.prompt_field], rec[source.response_field]
    elif layout == "messages":
        messages = rec["messages"] or []
        k = _last_assistant(messages, where)
        query, response = _clean_turns(messages[:k]), _text_of(messages[k])
    else:
        query, completion = rec["prompt"], rec["completion"]
        if isinstance(query, list):
            query = _clean_turns(query)
        if isinstance(completion, list):
            response = "".join(_text_of(t) for t in completion if isinstance(t, dict) and t.get("role") == "assistant")
        else:
            response = completion
    if not (isinstance(query, str) or (isinstance(query, list) and query)) or not isinstance(response, str):
        raise DataError(f"{where}: the prompt or the reference is not text (layout {layout})")
    return query, response
