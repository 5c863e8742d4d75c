"""Record files: a pydantic header and named arrays in one ``.npz``, checksummed, written atomically.

Layout of a record file (a plain ``.npz``, never pickled):

- ``__header__``: the header model as UTF-8 JSON, stored as a ``uint8`` array;
- ``__checksum__``: SHA-256 (hex, as ``uint8``) over the header bytes and every array's name,
  dtype, shape and bytes, in name order;
- every other entry: a numeric or boolean array.

The header model must have a ``schema_version: int`` field and a ``kind: str`` field. Loading
refuses a file that is truncated, corrupt, of another kind or of a newer schema, with a message
saying what is wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from crossbar_ctl.core.errors import RecordError

__all__ = ["atomic_write_bytes", "atomic_write_text", "load_record", "save_record"]

ModelT = TypeVar("ModelT", bound=BaseModel)

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import: os.umask can only be read by setting it

_HEADER = "__header__"
_CHECKSUM = "__checksum__"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a record is an ordinary file
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _checksum(header: bytes, arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256(header)
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_record(path: str | Path, header: BaseModel, arrays: dict[str, np.ndarray]) -> None:
    """Save a header model and arrays as one checksummed ``.npz``, atomically."""
    bad = [name for name in arrays if name.startswith("__")]
    if bad:
        raise ValueError(f"array names may not start with '__': {bad}")
    header_bytes = header.model_dump_json().encode("utf-8")
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    for name, value in arrays.items():
        if value.dtype == object:
            raise ValueError(f"array {name!r} has dtype object; records hold numeric arrays only")
    checksum = _checksum(header_bytes, arrays)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        **{_HEADER: np.frombuffer(header_bytes, dtype=np.uint8)},
        **{_CHECKSUM: np.frombuffer(checksum.encode(), dtype=np.uint8)},
        **arrays,
    )
    atomic_write_bytes(path, buffer.getvalue())


def load_record(
    path: str | Path, model: type[ModelT], *, kind: str | None = None
) -> tuple[ModelT, dict[str, np.ndarray]]:
    """Load and verify a record saved by :func:`save_record`.

    Parameters
    ----------
    path : path
        The ``.npz`` file.
    model : pydantic model class
        The header model; its ``schema_version`` default is the newest version understood.
    kind : str, optional
        Refuse a record whose header ``kind`` differs (a plan handed where a calibration belongs).

    Raises
    ------
    RecordError
        Missing, truncated, corrupt (checksum), of another kind, or of a newer schema.
    """
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        raise RecordError(f"{path}: not a readable record (truncated or corrupt, or not an .npz at all)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            contents = {name: npz[name] for name in npz.files}
    except FileNotFoundError as exc:
        raise RecordError(f"{path}: no such file") from exc
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise RecordError(f"{path}: not a readable record (truncated or corrupt): {exc}") from exc
    if _HEADER not in contents or _CHECKSUM not in contents:
        raise RecordError(f"{path}: not a crossbar-ctl record (no header or checksum)")
    header_bytes = contents.pop(_HEADER).tobytes()
    stored = contents.pop(_CHECKSUM).tobytes().decode("ascii", "replace")
    if _checksum(header_bytes, contents) != stored:
        raise RecordError(f"{path}: checksum mismatch: the file was modified or damaged")
    try:
        raw = json.loads(header_bytes)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: header is not JSON: {exc}") from exc
    newest = model.model_fields["schema_version"].default
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if not isinstance(version, int):
        raise RecordError(f"{path}: header has no integer schema_version")
    if version > newest:
        raise RecordError(
            f"{path}: schema_version {version} is newer than this crossbar-ctl reads ({newest}); "
            "upgrade crossbar-ctl"
        )
    if kind is not None and raw.get("kind") != kind:
        raise RecordError(f"{path}: is a {raw.get('kind')!r} record, expected {kind!r}")
    try:
        header = model.model_validate(raw)
    except ValidationError as exc:
        raise RecordError(f"{path}: invalid header: {exc.errors()[0]['msg']} at "
                          f"{'.'.join(map(str, exc.errors()[0]['loc']))}") from exc
    return header, contents
