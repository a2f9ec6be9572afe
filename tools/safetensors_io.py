"""Minimal safetensors writer and strict reader (no dependency on the `safetensors` package).

File layout (https://github.com/huggingface/safetensors, "Format"):
    u64 little-endian N | N bytes of JSON header | data section
The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative
to the start of the data section) plus an optional "__metadata__" {str: str}. Byte ranges must tile
the data section exactly (no holes, no overlap).

memserve's own conventions (docs/checkpoint-format.md), enforced by SafetensorsWriter:
  * the JSON header is padded with trailing spaces so the data section starts at a multiple of 64;
  * every tensor's offset is a multiple of its element size (the caller orders tensors by
    decreasing element size to get this without holes).

The writer streams: the header is computed from (name, dtype, shape) specs first, then tensors are
written one at a time, so a multi-GB file never has to be held in memory.
"""

import json
import os
import struct
import sys

import numpy as np
import torch

DATA_ALIGNMENT = 64

# safetensors dtype name -> (element size, torch dtype)
DTYPES = {
    "F32": (4, torch.float32),
    "BF16": (2, torch.bfloat16),
    "F16": (2, torch.float16),
    "I64": (8, torch.int64),
    "I32": (4, torch.int32),
    "I8": (1, torch.int8),
}
_TORCH_TO_ST = {v[1]: k for k, v in DTYPES.items()}

if sys.byteorder != "little":  # pragma: no cover
    raise RuntimeError("safetensors_io assumes a little-endian host")


class SafetensorsError(Exception):
    pass


def st_dtype(t):
    """The safetensors dtype name of a torch tensor's dtype."""
    try:
        return _TORCH_TO_ST[t.dtype]
    except KeyError:
        raise SafetensorsError(f"unsupported torch dtype {t.dtype}")


def _numel(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _raw_bytes_view(t):
    """A zero-copy numpy view of a contiguous CPU tensor's bytes."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().reshape(-1).view(np.uint8)


class SafetensorsWriter:
    """Writes tensors one by one into a safetensors file whose header is fixed up front.

    specs: list of (name, dtype, shape) in file order; dtype is a key of DTYPES.
    Usage:
        with SafetensorsWriter(path, specs, {"format": "pt"}) as w:
            for name, tensor in ...: w.write(name, tensor)   # in spec order
    The file is written to `path + ".tmp"` and renamed on a clean close, so a crash never leaves
    a truncated file under the final name.
    """

    def __init__(self, path, specs, metadata=None):
        self.path = path
        self._specs = []
        header = {}
        offset = 0
        for name, dtype, shape in specs:
            if dtype not in DTYPES:
                raise SafetensorsError(f"{name}: unsupported dtype {dtype}")
            if name in header or name == "__metadata__":
                raise SafetensorsError(f"duplicate or reserved tensor name {name!r}")
            esize = DTYPES[dtype][0]
            if offset % esize:
                raise SafetensorsError(
                    f"{name}: offset {offset} not aligned to {esize} bytes; "
                    "order tensors by decreasing element size")
            shape = [int(d) for d in shape]
            nbytes = _numel(shape) * esize
            header[name] = {"dtype": dtype, "shape": shape,
                            "data_offsets": [offset, offset + nbytes]}
            self._specs.append((name, dtype, tuple(shape), offset, nbytes))
            offset += nbytes
        if metadata is not None:
            header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}, **header}
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        # Pad with spaces so that 8 + len(header) is a multiple of DATA_ALIGNMENT.
        pad = (-(8 + len(text))) % DATA_ALIGNMENT
        text += b" " * pad
        self.header_bytes = text
        self.data_start = 8 + len(text)
        self.data_size = offset
        self._next = 0
        self._tmp = path + ".tmp"
        self._f = open(self._tmp, "wb")
        self._f.write(struct.pack("<Q", len(text)))
        self._f.write(text)

    def write(self, name, tensor):
        if self._next >= len(self._specs):
            raise SafetensorsError(f"{name}: more tensors than declared")
        sname, dtype, shape, offset, nbytes = self._specs[self._next]
        if name != sname:
            raise SafetensorsError(f"expected tensor {sname!r} next, got {name!r}")
        if st_dtype(tensor) != dtype or tuple(tensor.shape) != shape:
            raise SafetensorsError(
                f"{name}: declared {dtype}{list(shape)}, "
                f"got {st_dtype(tensor)}{list(tensor.shape)}")
        buf = _raw_bytes_view(tensor)
        assert buf.nbytes == nbytes
        self._f.write(memoryview(buf))
        self._next += 1

    def close(self):
        if self._f is None:
            return
        f, self._f = self._f, None
        complete = self._next == len(self._specs)
        size = f.tell()
        f.close()
        if not complete:
            os.unlink(self._tmp)
            missing = [s[0] for s in self._specs[self._next:]]
            raise SafetensorsError(f"not all declared tensors were written: {missing[:5]}")
        assert size == self.data_start + self.data_size
        os.replace(self._tmp, self.path)

    def abort(self):
        if self._f is not None:
            self._f.close()
            self._f = None
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_safetensors(path, named_tensors, metadata=None):
    """Convenience: write [(name, tensor)] in the given order."""
    specs = [(n, st_dtype(t), list(t.shape)) for n, t in named_tensors]
    with SafetensorsWriter(path, specs, metadata) as w:
        for n, t in named_tensors:
            w.write(n, t)


class SafetensorsFile:
    """A strictly validated, memory-mapped safetensors file.

    Attributes: header (dict name -> entry, without __metadata__), metadata (dict), data_start,
    order (names sorted by offset). tensor(name) returns a torch tensor (a copy).
    Raises SafetensorsError naming the file and the tensor on any violation: truncated file,
    header not a JSON object, unknown dtype, size mismatch, ranges outside the data section,
    overlaps or holes, misaligned offsets.
    """

    def __init__(self, path, require_alignment=True):
        self.path = path
        size = os.path.getsize(path)
        if size < 8:
            raise SafetensorsError(f"{path}: file too small ({size} bytes)")
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise SafetensorsError(f"{path}: header length {n} exceeds file size {size}")
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{path}: header is not valid JSON: {e}")
        if not isinstance(header, dict):
            raise SafetensorsError(f"{path}: header is not a JSON object")
        self.metadata = header.pop("__metadata__", {}) or {}
        self.header = header
        self.data_start = 8 + n
        data_size = size - self.data_start
        ranges = []
        for name, e in header.items():
            if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
                raise SafetensorsError(f"{path}: {name}: malformed entry {e!r}")
            if e["dtype"] not in DTYPES:
                raise SafetensorsError(f"{path}: {name}: unknown dtype {e['dtype']}")
            esize = DTYPES[e["dtype"]][0]
            b, end = e["data_offsets"]
            if not (0 <= b <= end <= data_size):
                raise SafetensorsError(f"{path}: {name}: range [{b}, {end}) outside data section "
                                       f"of {data_size} bytes")
            if _numel(e["shape"]) * esize != end - b:
                raise SafetensorsError(f"{path}: {name}: shape {e['shape']} x {esize} bytes != "
                                       f"{end - b} bytes")
            if require_alignment and (self.data_start + b) % esize:
                raise SafetensorsError(f"{path}: {name}: offset {b} not aligned to {esize}")
            ranges.append((b, end, name))
        ranges.sort()
        pos = 0
        for b, end, name in ranges:
            if b != pos:
                raise SafetensorsError(f"{path}: {name}: starts at {b}, expected {pos} "
                                       "(hole or overlap)")
            pos = end
        if pos != data_size:
            raise SafetensorsError(f"{path}: tensors cover {pos} bytes, data section has "
                                   f"{data_size}")
        self.order = [r[2] for r in ranges]
        self._mm = np.memmap(path, dtype=np.uint8, mode="r") if size else None

    def tensor(self, name):
        e = self.header[name]
        esize, tdtype = DTYPES[e["dtype"]]
        b, end = e["data_offsets"]
        raw = np.array(self._mm[self.data_start + b:self.data_start + end])  # copy
        if tdtype == torch.bfloat16:
            t = torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(raw.view(torch.empty(0, dtype=tdtype).numpy().dtype))
        return t.reshape(e["shape"])

    def tensors(self):
        return {n: self.tensor(n) for n in self.order}


def read_safetensors(path):
    """Returns (dict name -> torch tensor, metadata dict). Validates strictly."""
    f = SafetensorsFile(path)
    return f.tensors(), f.metadata
