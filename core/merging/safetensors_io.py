"""Reading safetensors lazily by name, and writing shards one tensor at a time.

Only safetensors are read (no pickle). The writer lays out each shard's header
from names, dtypes and shapes alone, then streams tensor bytes in order, so a
merge holds a few tensors in memory whatever the model size.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from overmem.errors import CorruptFile, MergeError
from overmem.merging.format import DTYPE_BITS, nbytes, read_header
from overmem.rundir.io import load_json
from overmem.rundir.names import safe_name

INDEX = "model.safetensors.index.json"
# What a merge can average exactly: floating-point weights at full scale. Quantized (FP8,
# FP4, FP6 with scales elsewhere), integer and boolean tensors can only be carried over
# unchanged.
MERGEABLE = ("F16", "BF16", "F32", "F64")
_TORCH_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "U16": "uint16",
                "U32": "uint32", "U64": "uint64", "C64": "complex64", "F8_E4M3": "float8_e4m3fn",
                "F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
                "F8_E8M0": "float8_e8m0fnu"}


class _TorchDtypes(dict):
    """safetensors dtype name -> torch dtype, where torch has one (torch imported on first use);
    packed sub-byte dtypes read as their raw bytes (uint8)."""

    def __missing__(self, key):
        import torch

        for name, attr in _TORCH_NAMES.items():
            if hasattr(torch, attr):
                self[name] = getattr(torch, attr)
        if key not in self:
            if key not in DTYPE_BITS:
                raise MergeError(f"unknown safetensors dtype {key!r}")
            return torch.uint8
        return dict.__getitem__(self, key)


TORCH_DTYPES = _TorchDtypes()


def _torch_dtype_name(dtype) -> str:
    import torch

    for name, attr in _TORCH_NAMES.items():
        if getattr(torch, attr, None) == dtype:
            return name
    raise MergeError(f"torch dtype {dtype} has no safetensors name")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path

    @property
    def nbytes(self) -> int:
        return nbytes(self.dtype, self.shape)


class TensorReader:
    """Tensors of a folder (single file, shards with an index, or a given file) by name."""

    def __init__(self, folder: Path, filename: str | None = None) -> None:
        self.folder = Path(folder)
        files = self._files(filename)
        self.tensors: dict[str, TensorInfo] = {}
        self._ranges: dict[str, tuple[int, int]] = {}
        for file in files:
            for name, meta in read_header(file).items():
                if name == "__metadata__":
                    continue
                if name in self.tensors:
                    raise CorruptFile(f"{self.folder}: tensor {name!r} is in both {self.tensors[name].file.name} and "
                                      f"{file.name}")
                self.tensors[name] = TensorInfo(name, meta["dtype"], tuple(meta["shape"]), file)
                self._ranges[name] = tuple(meta["data_offsets"])
        self._data_start: dict[Path, int] = {}

    def _files(self, filename: str | None) -> list[Path]:
        if filename:
            path = self.folder / filename
            if not path.is_file():
                raise MergeError(f"{path} is missing")
            return [path]
        index = self.folder / INDEX
        if index.is_file():
            try:
                weight_map = load_json(index)["weight_map"]
                if not isinstance(weight_map, dict):
                    raise ValueError("weight_map is not an object")
                names = {safe_name(f, "shard file name", CorruptFile) for f in weight_map.values()}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CorruptFile(f"{index}: unreadable index ({exc})") from exc
            files = sorted(self.folder / f for f in names)
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise MergeError(f"{self.folder}: shard(s) {missing} named by the index are missing")
            return files
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            pickles = [p.name for p in self.folder.glob("*.bin")] + [p.name for p in self.folder.glob("*.pt")]
            extra = f" (found {pickles}: pickle files are not read)" if pickles else ""
            raise MergeError(f"{self.folder} holds no safetensors weights{extra}")
        return files

    def names(self) -> list[str]:
        return list(self.tensors)

    def get(self, name: str):
        """One tensor, read on demand with plain file reads.

        Not mmap: mapped pages count towards the process's resident memory until
        unmapped, so reading three 10 GB checkpoints through mmap looks like 30 GB.
        """
        import torch

        info = self.tensors[name]
        start, end = self._offsets(info)
        buf = bytearray(end - start)
        try:
            with open(info.file, "rb") as fh:
                fh.seek(start)
                if fh.readinto(buf) != len(buf):
                    raise ValueError("file ends early")
        except (OSError, ValueError) as exc:
            raise MergeError(f"{info.file}: cannot read tensor {name} ({exc})") from exc
        if DTYPE_BITS[info.dtype] < 8:  # packed: the raw bytes
            return torch.frombuffer(buf, dtype=torch.uint8) if buf else torch.empty(0, dtype=torch.uint8)
        dtype = TORCH_DTYPES[info.dtype]
        if not buf:
            return torch.empty(info.shape, dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype).reshape(info.shape)

    def ends(self, name: str, n: int) -> bytes:
        """The first and last ``n`` bytes of a tensor's data (all of it when shorter), without
        reading the rest: a cheap sample of what a model is."""
        info = self.tensors[name]
        start, end = self._offsets(info)
        with open(info.file, "rb") as fh:
            if end - start <= 2 * n:
                fh.seek(start)
                return fh.read(end - start)
            fh.seek(start)
            head = fh.read(n)
            fh.seek(end - n)
            return head + fh.read(n)

    def raw(self, name: str) -> bytes:
        """A tensor's bytes as stored (compared when carrying non-float tensors over)."""
        info = self.tensors[name]
        start, end = self._offsets(info)
        with open(info.file, "rb") as fh:
            fh.seek(start)
            return fh.read(end - start)

    def _offsets(self, info: TensorInfo) -> tuple[int, int]:
        base = self._data_start.get(info.file)
        if base is None:
            with open(info.file, "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
            base = self._data_start[info.file] = 8 + size
        start, end = self._ranges[info.name]
        return base + start, base + end


def plan_shards(tensors: list[tuple[str, str, tuple[int, ...]]], max_shard_bytes: int) -> list[list]:
    """Group (name, dtype, shape) in order into shards of at most max_shard_bytes (one tensor may exceed)."""
    shards, current, size = [], [], 0
    for name, dtype, shape in tensors:
        n = nbytes(dtype, shape)
        if current and size + n > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((name, dtype, shape))
        size += n
    if current:
        shards.append(current)
    return shards


class ShardWriter:
    """Writes one safetensors file whose header is fixed up front; tensors are appended in order."""

    def __init__(self, path: Path, tensors: list[tuple[str, str, tuple[int, ...]]], metadata: dict | None = None):
        header: dict = {"__metadata__": metadata or {"format": "pt"}}
        offset = 0
        self.order = []
        for name, dtype, shape in tensors:
            n = nbytes(dtype, shape)
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
            self.order.append((name, dtype, tuple(shape), n))
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
        self.fh = open(path, "wb")
        self.fh.write(struct.pack("<Q", len(raw)))
        self.fh.write(raw)
        self.next = 0
        self.total = offset

    def write(self, name: str, tensor) -> int:
        import torch

        expected, dtype, shape, n = self.order[self.next]
        if name != expected or tuple(tensor.shape) != shape or _torch_dtype_name(tensor.dtype) != dtype:
            raise MergeError(f"internal: tensor {name} written out of plan")
        data = tensor.contiguous().view(-1).view(torch.uint8).numpy()  # a view: no copy
        assert data.nbytes == n
        self.fh.write(memoryview(data))
        self.next += 1
        return n

    def write_raw(self, name: str, data: bytes) -> int:
        """A tensor carried over unchanged, byte for byte (any dtype, packed ones too)."""
        expected, _, _, n = self.order[self.next]
        if name != expected or len(data) != n:
            raise MergeError(f"internal: tensor {name} written out of plan")
        self.fh.write(data)
        self.next += 1
        return n

    def close(self) -> None:
        if self.next != len(self.order):
            raise MergeError("internal: shard closed before all its tensors were written")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()


def write_index(folder: Path, shards: Iterable[tuple[str, list]], total_size: int) -> None:
    weight_map = {name: file for file, tensors in shards for name, _, _ in tensors}
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map},
                                           indent=2))
