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

from crossbar_ctl.core.errors import CrossbarError, RecordError

__all__ = ["atomic_save_figure", "atomic_write_bytes", "atomic_write_text", "load_record", "pyplot",
           "read_npz", "save_record"]

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


def pyplot(error: type[CrossbarError], needs: str):
    """``matplotlib.pyplot`` on the Agg backend; without matplotlib, ``error`` naming the extra.

    ``needs`` opens the message, e.g. ``"--plot needs"``.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise error(f"{needs} matplotlib: pip install 'crossbar-ctl[plot]'") from exc
    return plt


def atomic_save_figure(figure, path: str | Path, *, dpi: float) -> None:
    """Atomically save a matplotlib figure, in the format its suffix names (png without one)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix[1:].lower() or "png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())


def _what_it_is(head: bytes) -> str:
    """A plain description of a file that is not a zip archive, from its first bytes."""
    damaged = "truncated or corrupt, or another format"
    if not head:
        return f"it is empty: {damaged}"
    if head.startswith(b"PK"):
        return "a truncated or corrupt zip archive"
    if head.startswith(b"\x93NUMPY"):
        return "a bare .npy array; save arrays with numpy.savez"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle, which crossbar-ctl never loads"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(ch.isprintable() or ch.isspace() for ch in text):
        return f"it holds text: {damaged}"
    return f"unrecognised binary data: {damaged}"


def read_npz(path: str | Path, *, what: str = "") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file; nothing is ever unpickled.

    ``numpy.load`` alone also opens ``.npy`` files and pickles, and calls anything else "pickled
    data"; this reader opens zip archives of ``.npy`` members only and says plainly what a file
    is otherwise.

    Parameters
    ----------
    path : path
        The ``.npz`` file.
    what : str, optional
        What the file should hold (``"network"``, ``"data"``), for the messages.

    Raises
    ------
    RecordError
        Missing, not an ``.npz`` (text, random bytes, a bare ``.npy``, a pickle), truncated or
        corrupt, or holding object arrays or members that are not arrays.
    """
    path = Path(path)
    label = f" {what}" if what else ""
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except FileNotFoundError as exc:
        raise RecordError(f"{path}: no such{label} file") from exc
    except OSError as exc:
        raise RecordError(f"{path}: cannot read{label} file: {exc.strerror or exc}") from exc
    if not zipfile.is_zipfile(path):
        raise RecordError(f"{path}: not an .npz file ({_what_it_is(head)})")
    try:
        with np.load(path, allow_pickle=False) as npz:
            contents = {name: npz[name] for name in npz.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "bject" in str(exc):
            raise RecordError(f"{path}: the .npz{label} holds object arrays; only numeric and text "
                              "arrays are read, never pickles") from exc
        raise RecordError(f"{path}: not a readable .npz{label} (truncated or corrupt): {exc}") from exc
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        raise RecordError(f"{path}: not a readable .npz{label} (truncated or corrupt): {exc}") from exc
    strays = [name for name, value in contents.items() if not isinstance(value, np.ndarray)]
    if strays:
        raise RecordError(f"{path}: not an .npz file (member {strays[0]!r} is not a .npy array)")
    return contents


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
    try:  # JSON has no inf or NaN (they become null): never write what load_record would refuse
        type(header).model_validate(json.loads(header_bytes))
    except ValidationError as exc:
        raise RecordError(f"{path}: not written: the header would not read back: "
                          f"{_first_error(exc)}") from exc
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
    contents = read_npz(path)
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
        raise RecordError(f"{path}: invalid header: {_first_error(exc)}") from exc
    return header, contents


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{error['msg']} at {'.'.join(map(str, error['loc']))}"
