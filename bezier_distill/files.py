"""Crash-safe file writes: a file is either its old version or its new one, never half written."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import DamagedFileError


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Writes data to a temp file in path's directory, flushes it to disk, then os.replace()s it onto path."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=1) + "\n")


def try_read_json(path: str | Path) -> tuple[Any, str | None]:
    """(The JSON value in path, None), or (None, why it cannot be read: missing, not valid JSON)."""
    try:
        return json.loads(Path(path).read_bytes()), None
    except FileNotFoundError:
        return None, "missing"
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, f"not valid JSON: {error}"


def read_json(path: str | Path) -> Any:
    """The JSON value in path; DamagedFileError naming the file when it is not valid JSON (e.g. cut short)."""
    value, problem = try_read_json(path)
    if problem == "missing":
        raise FileNotFoundError(2, "No such file or directory", str(path))
    if problem:
        raise DamagedFileError(f"'{path}' is {problem}; delete it and rerun the command that wrote it")
    return value


def remove_stale_temps(directory: str | Path, name_pattern: str) -> None:
    """Deletes the temp files that atomic_write left in directory for names matching name_pattern when the
    process was killed mid-write (nothing else can remove them)."""
    for tmp in Path(directory).glob(f".{name_pattern}.*.tmp"):
        tmp.unlink(missing_ok=True)


def canonical_safetensors(data: bytes) -> bytes:
    """A safetensors file's bytes with the keys of its JSON header sorted: the same tensors and metadata then
    always give the same bytes (safetensors writes the metadata in a hash order that differs per process)."""
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data stay 8-byte aligned, as safetensors pads them
    return len(header).to_bytes(8, "little") + header + data[8 + size:]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
