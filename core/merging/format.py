"""The safetensors format: its dtypes and sizes, and headers validated as it defines them.

Every header overmem reads, and every checkpoint folder before a library maps it, goes
through ``read_header``: a file whose header does not say exactly where each byte of
data belongs is refused with one line naming the file and the tensor.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

from overmem.errors import CorruptFile, MergeError

# Every dtype the safetensors format defines, with its size in bits (F4 and F6 are packed).
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
              "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
              "C64": 64, "F64": 64, "I64": 64, "U64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}

def nbytes(dtype: str, shape) -> int:
    """Bytes of a tensor of ``dtype`` and ``shape`` (sub-byte dtypes packed)."""
    if dtype not in DTYPE_BITS:
        raise MergeError(f"unknown safetensors dtype {dtype!r}")
    n = DTYPE_BITS[dtype]
    for d in shape:
        n *= d
    return -(-n // 8)


MAX_HEADER = 100_000_000  # the format's own limit


def _no_duplicates(pairs: list) -> dict:
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"the header names {next(k for k in names if names.count(k) > 1)!r} twice")
    return dict(pairs)


def read_header(path: Path) -> dict:
    """The JSON header of one safetensors file, validated as the format defines it (CorruptFile,
    naming the file and the tensor, otherwise): a JSON object of tensors with a known dtype, a
    shape of whole numbers and data offsets that are in order, contiguous, non-overlapping,
    cover the data exactly and hold prod(shape) x the dtype's size bytes. Nothing else is read
    from a file whose header does not say exactly where each byte belongs."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ValueError("not a regular file")
        total = os.path.getsize(path)
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ValueError("the file is shorter than a header")
            (size,) = struct.unpack("<Q", raw)
            if size > MAX_HEADER or 8 + size > total:
                raise ValueError(f"the header size {size} is out of range")
            text = fh.read(size)
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSON errors are ValueErrors
        raise CorruptFile(f"{path}: not a readable safetensors file ({exc})") from exc
    check_header(header, total - 8 - size, path)
    return header


def check_header(header, data_size: int, path) -> None:
    """CorruptFile unless ``header`` lays out exactly ``data_size`` bytes of tensors (see read_header)."""
    def bad(what: str):
        return CorruptFile(f"{path}: {what}")

    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise bad("__metadata__ is not an object of strings")
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise bad(f"tensor {name!r} is not described by an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise bad(f"tensor {name!r} has an unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise bad(f"tensor {name!r} has no shape of whole numbers ({shape!r})")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(
                isinstance(o, int) and not isinstance(o, bool) for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise bad(f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end] with begin <= end")
        if DTYPE_BITS[dtype] < 8 and shape and (DTYPE_BITS[dtype] * shape[-1]) % 8:
            raise bad(f"tensor {name!r}: a packed {dtype} row of {shape[-1]} values does not fill whole bytes")
        expected = nbytes(dtype, shape)
        if offsets[1] - offsets[0] != expected:
            raise bad(f"tensor {name!r} is {dtype} {shape} ({expected} bytes) but its data_offsets {offsets} "
                      f"hold {offsets[1] - offsets[0]}")
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            what = "overlaps the tensor before it" if begin < end else "leaves a gap before it"
            raise bad(f"tensor {name!r} starts at byte {begin} of the data and {what} (which ends at {end})")
        end = stop
    if end != data_size:
        raise bad(f"the tensors cover {end} bytes of data, the file holds {data_size}")


def check_weights(folder: Path) -> None:
    """Validate a model or adapter folder before a library maps it (CorruptFile naming the file
    and the tensor): every safetensors header, and a shard index that names only files of the
    folder itself, each there, and every tensor in the shard it names."""
    folder = Path(folder)
    headers = {file.name: read_header(file) for file in sorted(folder.glob("*.safetensors"))}
    for index in sorted(folder.glob("*.safetensors.index.json")):
        check_index(index, headers)


def check_index(index: Path, headers: dict[str, dict]) -> None:
    from overmem.rundir.io import load_json
    from overmem.rundir.names import safe_name

    try:
        weight_map = load_json(index)["weight_map"]
        if not isinstance(weight_map, dict):
            raise ValueError("weight_map is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptFile(f"{index}: unreadable index ({exc})") from exc
    for tensor, file in weight_map.items():
        safe_name(file, f"{index}: the shard file of {tensor!r},", CorruptFile)
        if file not in headers:
            raise CorruptFile(f"{index}: the shard {file!r} of tensor {tensor!r} is not in the folder")
        if tensor not in headers[file]:
            raise CorruptFile(f"{index}: tensor {tensor!r} is not in its shard {file}")
