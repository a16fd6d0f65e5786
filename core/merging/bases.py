"""Which base model a merge's inputs were trained on, decided by what the base is, not its name.

Adapters name their base as their trainer saw it: a hub id on one machine, the local
snapshot of that id on another. Two names are the same base when they resolve to the
same folder or when the weights agree (``fingerprint``: tensor names, dtypes and
shapes, and bytes sampled from the tensors' data, independent of sharding); ``--base``
decides when the names cannot be compared here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from overmem.rundir.io import load_json
from overmem.errors import MergeError
from overmem.merging.safetensors_io import TensorReader
from overmem.rundir.checkpoint import adapter_base
from overmem.rundir.records import Run

_SAMPLED_TENSORS = 64
_SAMPLE_BYTES = 4096
_ARCHITECTURE = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size")


def local_base(ref: str) -> Path:
    """A local folder with the base model's safetensors: the folder itself, or the hub cache."""
    if ref and Path(ref).expanduser().is_dir():
        return Path(ref).expanduser().resolve()
    if not ref or ref == "unknown":
        raise MergeError("the base model is not known: give --base (a folder or a hub id)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, allow_patterns=["*.safetensors", "*.json", "*.model", "*.txt"]))
    except Exception as exc:  # offline, gated, missing: all mean "cannot get the base"
        raise MergeError(f"cannot get the base model {ref}: {exc}".split("\n")[0]) from exc


def cached_base(ref: str) -> Path | None:
    """``ref``'s folder when it is here already (a folder, or the hub cache), never downloading."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve()
    if ref.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, local_files_only=True))
    except Exception:  # not cached (or not a hub id): it cannot be compared here
        return None


def fingerprint(folder: Path) -> str:
    """What a base model is: its tensors' names, dtypes and shapes, and bytes sampled from the
    start and end of up to 64 of them (spread over the sorted names)."""
    reader = TensorReader(folder)
    names = sorted(reader.tensors)
    digest = hashlib.sha256()
    for name in names:
        info = reader.tensors[name]
        digest.update(f"{name}|{info.dtype}|{info.shape}\n".encode())
    step = max(1, len(names) // _SAMPLED_TENSORS)
    for name in names[::step][:_SAMPLED_TENSORS]:
        digest.update(reader.ends(name, _SAMPLE_BYTES))
    return digest.hexdigest()


def _same_folder(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def same_model(ref: str, folder: Path) -> bool | None:
    """Whether the model ``ref`` names is the one in ``folder``: True or False when ``ref`` is
    here to compare, None when it is not."""
    other = cached_base(ref)
    if other is None:
        return None
    if other.resolve() == folder.resolve():
        return True
    return fingerprint(other) == fingerprint(folder)


def base_ref_of(run: Run | None, inputs: list, given: str | None) -> str:
    """The base every input was trained from: --base, the run's, or what the adapters name (two
    names of one model count as one)."""
    if given:
        return given
    if run is not None and run.info is not None:
        base = run.info.base_model
        if base.get("gguf_file"):
            raise MergeError("the base is a GGUF file: merging streams safetensors, so convert the base first")
        ref = base.get("path") or base.get("id")
        if ref and ref != "unknown":
            return ref
    named = sorted({adapter_base(i.path) for i in inputs if i.fmt == "adapter"} - {None})
    if len(named) > 1:
        here = [cached_base(n) for n in named]
        if all(here) and len({fingerprint(f) for f in here}) == 1:
            return next((n for n, f in zip(named, here) if Path(n).expanduser().is_dir()), named[0])
        raise MergeError(f"the adapters name different bases: {', '.join(named)} (if they are one model, give it "
                         "with --base)")
    if named:
        return named[0]
    raise MergeError("full checkpoints name no base: give --base (the model they were finetuned from)")


def same_base(inp, base: Path, base_ref: str, run: Run | None, *, given: bool = False) -> None:
    """MergeError unless ``inp`` was trained on the base in ``base``: an adapter naming it (by
    any name that is the same model), or a full model of the same architecture."""
    if inp.fmt == "adapter":
        ref = adapter_base(inp.path)
        known = [base_ref, str(base)] + ([run.info.base_model.get("id") or "", run.info.base_model.get("path") or ""]
                                         if run is not None and run.info is not None else [])
        if not ref or any(_same_folder(ref, k) for k in known if k):
            return
        same = same_model(ref, base)
        if same is False or (same is None and not given):
            raise MergeError(f"{inp.label} was trained on {ref}, not on the base {base_ref}"
                             + ("" if same is False else " (if it is that model, say so with --base)"))
    elif inp.fmt == "full":
        try:
            mine = load_json(inp.path / "config.json")
            theirs = load_json(base / "config.json")
        except (OSError, ValueError) as exc:
            raise MergeError(f"cannot compare {inp.label} with the base: {exc}") from exc
        if not isinstance(mine, dict) or not isinstance(theirs, dict):
            raise MergeError(f"cannot compare {inp.label} with the base: a config.json is not a JSON object")
        for key in _ARCHITECTURE:
            if mine.get(key) != theirs.get(key):
                raise MergeError(f"{inp.label} has {key}={mine.get(key)}, the base {theirs.get(key)}: different bases")
