"""lm-evaluation-harness tasks as splits: lm-eval's own documents, prompts, generation
settings, filters and scoring, on every checkpoint of a run.

A task split is recorded in run.json as a data source of kind ``lm-eval``: ``ref`` is a
task name from lm-eval's registry or the path of the user's task YAML file or folder;
``params`` holds the task's name and lm-eval's prompt options (few-shot count, chat
template, few-shot as multi-turn). Everything else comes from lm-eval itself, the way
``lm_eval.simple_evaluate(model="hf", ...)`` uses it, never from a copy:

- rows: the task's evaluation documents (its test split, else its validation split),
  each with the context lm-eval builds (few-shot examples drawn with simple_evaluate's
  seed, the tokenizer's chat template when asked) and ``doc_to_target`` as its reference;
- generation: greedy, stopped at the task's ``until`` strings and the end-of-sequence
  text, at most ``max_gen_toks`` tokens, the context tokenized and left-truncated as
  lm-eval's HF model does (``HFLM.tok_batch_encode``, ``max_length - max_gen_toks``);
- accuracy: the decoded continuation cut at the first ``until`` string, through the task's
  first filter pipeline (gsm8k's ``strict-match``) and scored by its ``process_results``
  (``exact_match``); a task whose score is not right/wrong per row is refused;
- perplexity: of ``target_delimiter + target`` after the context, the pair tokenized as
  lm-eval's loglikelihood requests are (``HFLM._encode_pair``), without an added EOS.

A task YAML can run code: ``!function`` and ``class:`` import Python, its Jinja templates
are rendered unsandboxed, a metric path is loaded by ``evaluate``. A task file is therefore
loaded only when this invocation's command line names it (``--task FILE``); a run.json
(written by whoever wrote the run) may name only tasks of lm-eval's own registry, the
installed package's code, and a split it records from a file is refused, asking for
``--task FILE`` again.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from overmem.data.encoding import Encoded
from overmem.data.loaders import DataSource, SplitSpec
from overmem.errors import DataError, OvermemError, UsageError
from overmem.rundir.lines import canonical_split
from overmem.rundir.names import is_safe_name, safe_name

LM_EVAL_KIND = "lm-eval"
INSTALL = "install it with: pip install -e '.[lm-eval]' (in overmem's clone; lm-eval 0.4.x)"
FEWSHOT_SEED = 1234  # simple_evaluate's fewshot_random_seed default
DEFAULT_MAX_LENGTH = 2048  # HFLM._DEFAULT_MAX_LENGTH: a model whose config names no length
DEFAULT_MAX_GEN_TOKS = 256  # HFLM.max_gen_toks: a task that names none
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class TaskOptions:
    """lm-eval's prompt options, as ``lm_eval --num_fewshot --apply_chat_template
    --fewshot_as_multiturn`` take them (None: the task's own few-shot count, else 0)."""

    num_fewshot: int | None = None
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool = False

    def to_json(self) -> dict:
        return {"num_fewshot": self.num_fewshot, "apply_chat_template": self.apply_chat_template,
                "fewshot_as_multiturn": self.fewshot_as_multiturn}

    @classmethod
    def from_params(cls, params: dict, where: str) -> "TaskOptions":
        k = params.get("num_fewshot")
        chat, multi = params.get("apply_chat_template", False), params.get("fewshot_as_multiturn", False)
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 1000) \
                or not isinstance(chat, bool) or not isinstance(multi, bool):
            raise DataError(f"{where}: lm-eval options {params!r} are not num_fewshot (a count), "
                            "apply_chat_template and fewshot_as_multiturn (true/false)")
        return cls(k, chat, multi)


def require_lm_eval() -> None:
    """UsageError saying how to install lm-eval when it is missing or not a tested 0.4.x."""
    from importlib import metadata, util

    try:
        version = metadata.version("lm_eval")
        if util.find_spec("lm_eval") is None:
            raise ImportError("lm_eval")
    except (ImportError, metadata.PackageNotFoundError) as exc:
        raise UsageError(f"--task needs lm-evaluation-harness, which is not installed: {INSTALL}") from exc
    if not version.startswith("0.4."):
        raise UsageError(f"--task is tested with lm-eval 0.4.x; this one is {version}: {INSTALL}")


def _is_path(ref: str) -> bool:
    """A task file or folder (a YAML name, or anything with a path separator; a folder in the
    current directory is written ``./tasks``), else a name in lm-eval's registry."""
    return ref.endswith(YAML_SUFFIXES) or "/" in ref or os.sep in ref or ref.startswith("~")


@functools.lru_cache(maxsize=4)
def _manager(folder: str | None):
    """lm-eval's task index (its own tasks, and the user's folder when one is given); indexing
    takes seconds, so it is kept for the process."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=folder) if folder else TaskManager()


def _load(ref: str, names: list[str] | None = None) -> dict:
    """The leaf tasks (name -> lm-eval Task) that ``ref`` names: a registered task or group,
    a task YAML file, or every task a YAML folder defines (``names``: only these)."""
    require_lm_eval()
    import logging

    import datasets

    # a task's documents load quietly: stderr is for what went wrong (lm-eval logs its config notes)
    datasets.disable_progress_bars()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    folder = None
    spec: str | list[str] = ref
    if _is_path(ref):
        path = Path(ref).expanduser().resolve()
        if not path.exists():
            raise DataError(f"no lm-eval task file or folder {ref}")
        folder = str(path if path.is_dir() else path.parent)
        spec = names or _folder_tasks(path) if path.is_dir() else str(path)
    elif names:  # a group's tasks are registered by their own names: build only those
        spec = names
    try:
        loaded = _manager(folder).load(spec)["tasks"]
    except KeyError:
        raise DataError(f"lm-eval has no task {ref!r} and it is no task YAML file or folder "
                        "(`lm-eval ls tasks` lists lm-eval's tasks; a folder here is written ./NAME)") from None
    except Exception as exc:  # lm-eval raises anything from its YAML and dataset loading
        from overmem.data.diagnose import root_cause

        raise DataError(f"lm-eval task {ref}: {root_cause(exc)}") from exc
    return {name: task for name, task in loaded.items() if names is None or name in names}


def _folder_tasks(path: Path) -> list[str]:
    from lm_eval.tasks._index import Kind

    found = sorted(name for name, entry in _manager(str(path)).task_index.items()
                   if entry.kind in (Kind.TASK, Kind.PY_TASK) and entry.yaml_path
                   and Path(entry.yaml_path).resolve().is_relative_to(path))
    if not found:
        raise DataError(f"{path} defines no lm-eval task (no task YAML in it)")
    return found


def _refusal(name: str, task) -> str | None:
    """Why overmem cannot measure ``task`` as generation accuracy, or None."""
    output = task.get_config("output_type")
    if output != "generate_until":
        return f"is a {output} task; overmem measures generated answers, so it takes generate_until tasks"
    if getattr(task, "UNSAFE_CODE", False):
        return "scores by running generated code (unsafe_code); overmem does not run it"
    gen = task.get_config("generation_kwargs") or {}
    if not isinstance(gen, dict):
        return f"has generation_kwargs {str(gen)[:60]!r}, not a mapping"
    if gen.get("do_sample") or (task.get_config("repeats") or 1) > 1:
        return "samples several generations per row; overmem's accuracy is one greedy generation"
    until = gen.get("until")
    if until is not None and not (isinstance(until, str) or isinstance(until, list)
                                  and all(isinstance(u, str) for u in until)):
        return f"has until {str(until)[:60]!r}, not a list of strings"
    budget = next((gen[k] for k in ("max_gen_toks", "max_new_tokens", "max_tokens") if k in gen), DEFAULT_MAX_GEN_TOKS)
    if isinstance(budget, bool) or not isinstance(budget, int) or not 0 < budget <= 1_000_000:
        return f"has max_gen_toks {str(budget)[:30]!r}, not a token count"
    metrics = set(getattr(task, "_metric_fn_list", {}) or {})
    if not metrics & {"exact_match", "acc"}:
        return (f"scores by {', '.join(sorted(metrics)) or 'no metric'}; overmem's accuracy needs a right/wrong score "
                "per row (exact_match or acc)")
    return None


def task_splits(ref: str, options: TaskOptions = TaskOptions()) -> dict[str, SplitSpec]:
    """The splits ``--task ref`` defines: one per leaf task (a group gives its tasks), named
    after it, recorded so later commands rebuild it (a path is recorded absolute)."""
    tasks = _load(ref)
    recorded = str(Path(ref).expanduser().resolve()) if _is_path(ref) else ref
    out = {}
    for name, task in tasks.items():
        safe_name(name, "lm-eval task name", DataError)
        if canonical_split(name) != name:
            raise DataError(f"lm-eval task {name!r} would be a split named like overmem's {canonical_split(name)}")
        if (why := _refusal(name, task)) is not None:
            raise DataError(f"lm-eval task {name} {why}")
        params = {"task": name, **options.to_json()}
        out[name] = SplitSpec(DataSource(LM_EVAL_KIND, recorded, answer_format="auto", params=params))
    return out


def check_source(source: DataSource) -> tuple[str, TaskOptions]:
    """(task name, options) of a recorded lm-eval source; DataError naming what is wrong."""
    where = f"the lm-eval split {source.ref!r}"
    name = source.params.get("task")
    if not isinstance(name, str) or not is_safe_name(name) or name.endswith(YAML_SUFFIXES):
        raise DataError(f"{where} names no task by a plain name (params.task {str(name)[:60]!r})")
    return name, TaskOptions.from_params(source.params, where)


def needs_command_line(source: DataSource) -> bool:
    """True for a task file: loaded only when this command names it (see the module doc)."""
    return _is_path(source.ref)


class TaskSplit:
    """One lm-eval task as a split of a run: its rows, and how they are prompted, generated,
    cut, scored and graded (see the module docstring)."""

    def __init__(self, source: DataSource, tokenizer, model_config=None, *, trusted: bool = False) -> None:
        self.name, self.options = check_source(source)
        if needs_command_line(source) and not trusted:
            raise DataError(f"split {self.name} is the lm-eval task file {source.ref}, which can run code; overmem "
                            f"loads a task file only when the command names it: add --task {source.ref}")
        if not needs_command_line(source) and self.name not in _manager(None).task_index:
            raise DataError(f"lm-eval's registry has no task {self.name!r} (split {self.name})")
        tasks = _load(source.ref, [self.name])
        if self.name not in tasks:
            raise DataError(f"lm-eval task {source.ref!r} has no task {self.name!r} any more")
        self.task = tasks[self.name]
        if (why := _refusal(self.name, self.task)) is not None:
            raise DataError(f"lm-eval task {self.name} {why}")
        self.tokenizer = tokenizer
        self._config = model_config
        self._instances = None
        self._generation()

    # -- lm-eval's requests ------------------------------------------------------------
    def _generation(self) -> None:
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

        kwargs = normalize_gen_kwargs(dict(self.task.get_config("generation_kwargs") or {}), DEFAULT_MAX_GEN_TOKS)
        eos = self.tokenizer.decode(self.tokenizer.eos_token_id, skip_special_tokens=False) \
            if self.tokenizer.eos_token_id is not None else None
        self.until = tuple(handle_stop_sequences(kwargs.get("until"), eos=eos))
        self.max_new_tokens = int(kwargs["max_gen_toks"])
        self.max_length = _max_length(self._config, self.tokenizer)
        if self.max_length <= self.max_new_tokens:
            raise DataError(f"lm-eval task {self.name} generates up to {self.max_new_tokens} tokens, "
                            f"which fills the model's {self.max_length}-token context")

    def _chat(self, history: list[dict], add_generation_prompt: bool = True) -> str:
        """HFLM.apply_chat_template: the tokenizer's template (a system turn it rejects is dropped)."""
        import jinja2

        kwargs = dict(tokenize=False, add_generation_prompt=add_generation_prompt,
                      continue_final_message=not add_generation_prompt)
        try:
            return self.tokenizer.apply_chat_template(history, **kwargs)
        except jinja2.exceptions.TemplateError:
            return self.tokenizer.apply_chat_template([m for m in history if m["role"] != "system"], **kwargs)

    @property
    def instances(self) -> list:
        """lm-eval's requests for every evaluation document, built as simple_evaluate builds
        them (its few-shot count rule and seed), in document order."""
        if self._instances is None:
            opts, task = self.options, self.task
            if opts.apply_chat_template and not getattr(self.tokenizer, "chat_template", None):
                raise DataError(f"--apply-chat-template for {self.name}: the tokenizer has no chat template")
            if opts.num_fewshot is not None and task.get_config("num_fewshot") != 0:
                task.set_config(key="num_fewshot", value=opts.num_fewshot)
            elif task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=FEWSHOT_SEED)
            try:
                self._build(task, opts)
            except OvermemError:
                raise
            except Exception as exc:  # lm-eval raises anything from its sampler and templates
                from overmem.data.diagnose import root_cause

                raise DataError(f"lm-eval task {self.name}: cannot build its prompts ({root_cause(exc)})") from exc
            self._instances = sorted(task.instances, key=lambda inst: inst.doc_id)
        return self._instances

    def _build(self, task, opts: TaskOptions) -> None:
        task.build_all_requests(
            rank=0, world_size=1, apply_chat_template=opts.apply_chat_template,
            fewshot_as_multiturn=opts.fewshot_as_multiturn,
            chat_template=self._chat if opts.apply_chat_template else None,
            tokenizer_name=str(getattr(self.tokenizer, "name_or_path", "")).replace("/", "__")
            if opts.apply_chat_template else "")

    def rows(self) -> list[dict]:
        """One row per document: the context as its query, ``target_delimiter + target`` as its
        reference, the target as its gold answer and the document's index."""
        delimiter = self.task.get_config("target_delimiter")
        delimiter = " " if delimiter is None else delimiter
        rows = []
        for inst in self.instances:
            target = self.task.doc_to_target(inst.doc)
            if isinstance(target, list):
                target = target[0] if target else ""
            if isinstance(target, int) and self.task.get_config("doc_to_choice") is not None:
                target = self.task.doc_to_choice(inst.doc)[target]  # an index into the choices: the choice
            rows.append({"query": inst.args[0], "response": delimiter + str(target), "answer": str(target),
                         "doc_id": inst.doc_id})
        return rows

    # -- tokens --------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        """HFLM.tok_encode: the tokenizer's special tokens unless the text starts with its prefix token."""
        tok = self.tokenizer
        prefix_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        prefix = tok.decode(prefix_id) if prefix_id is not None else None
        specials = {"add_special_tokens": False} if prefix and text.startswith(prefix) else {}
        return list(tok.encode(text, **specials))

    def prompt(self, query: str) -> list[int]:
        """The context as HFLM.generate_until feeds it: encoded without the special tokens when it
        starts with the BOS text, left-truncated to leave room for max_gen_toks."""
        tok = self.tokenizer
        bos = getattr(tok, "bos_token", None)
        specials = {"add_special_tokens": False} if bos and query.startswith(bos) else {}
        ids = list(tok(query, **specials)["input_ids"])
        return ids[-(self.max_length - self.max_new_tokens):]

    def encode(self, row: dict) -> Encoded:
        """Context + reference as lm-eval's loglikelihood pair (the context's trailing spaces move
        to the reference), left-truncated to the model's length as lm-eval does."""
        context, continuation = row["query"], row["response"]
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self._encode(context + continuation)
        n_prompt = min(len(self._encode(context)), len(whole))
        drop = max(0, len(whole) - self.max_length)
        return Encoded(tuple(whole[drop:]), max(0, n_prompt - drop), drop > n_prompt)

    def text(self, ids: list[int]) -> str:
        """HFLM.generate_until's answer: the decoded continuation cut at the first stop string."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for term in self.until:
            if term:
                text = text.split(term)[0]
        return text

    # -- scoring -------------------------------------------------------------------------
    def grade(self, doc_id: int, text: str) -> tuple[str | None, bool]:
        """(the task's filtered answer, right or wrong) for the generation ``text`` of a document,
        by the task's first filter pipeline and its first metric, as lm-eval scores it."""
        import copy

        inst = copy.copy(self._by_doc()[doc_id])
        inst.resps, inst.filtered_resps = [text], {}
        pipeline = self.task._filters[0]  # FilterEnsemble; lm-eval reports each, overmem the first
        pipeline.apply([inst])
        answer = inst.filtered_resps[pipeline.name]
        scores = self.task.process_results(inst.doc, [answer])
        metric = "exact_match" if "exact_match" in scores else next(iter(scores))
        value = float(scores[metric])
        if value not in (0.0, 1.0):
            raise DataError(f"lm-eval task {self.name}: its metric {metric} scored {value} on one row; overmem's "
                            "accuracy needs a right/wrong score per row")
        return (None if answer is None else str(answer)), value == 1.0

    @functools.cached_property
    def filter_name(self) -> str:
        return self.task._filters[0].name

    def _by_doc(self) -> dict:
        if not hasattr(self, "_docs"):
            self._docs = {inst.doc_id: inst for inst in self.instances}
        return self._docs


def _max_length(config, tokenizer) -> int:
    from lm_eval.models.utils import resolve_max_length

    return int(resolve_max_length(config, tokenizer, default=DEFAULT_MAX_LENGTH))
