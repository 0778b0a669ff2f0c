"""Input and output files of the offline check: a JSON array, or newline-delimited JSON.

The format is told by the first non-whitespace byte: ``[`` is an array, anything else is
NDJSON (one document per line, blank lines allowed).

- NDJSON is streamed: one line in memory at a time. A document the check leaves alone is
  written back as the very bytes it was read from (line ending included); a changed one is
  re-serialized compactly, followed by the line ending it had.
- A JSON array is loaded whole (one ``orjson.loads``) and written back one element per
  line, ``[`` and ``]`` on lines of their own: values identical, layout normalized.

The output goes to a temporary file in the target's directory, is fsynced, and replaces the
target with ``os.replace`` only when everything succeeded; on any failure it is removed.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Self

from consumer.errors import FileInputError
from consumer.offline import extjson

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

_WHITESPACE = b" \t\r\n"
_READ_BUFFER = 1024 * 1024


class InputFormat(StrEnum):
    ARRAY = "array"
    NDJSON = "ndjson"


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One document of the input, or (NDJSON) one blank line to carry through.

    ``where`` names it in messages: ``line N`` (1-based) or ``index N`` (0-based).
    ``raw`` is the NDJSON line as read, ending included; ``None`` for array elements.
    """

    where: str
    document: Any
    raw: bytes | None
    blank: bool = False


def _open_input(path: Path) -> BinaryIO:
    try:
        return path.open("rb", buffering=_READ_BUFFER)
    except OSError as exc:
        raise FileInputError(f"cannot read {path}: {exc.strerror or exc}") from None


def detect_format(path: Path) -> InputFormat:
    """ARRAY when the first non-whitespace byte is ``[``, else NDJSON (also when empty)."""
    with _open_input(path) as stream:
        try:
            while chunk := stream.read(64 * 1024):
                stripped = chunk.lstrip(_WHITESPACE)
                if stripped:
                    return InputFormat.ARRAY if stripped[:1] == b"[" else InputFormat.NDJSON
        except OSError as exc:
            raise FileInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return InputFormat.NDJSON


def read_records(path: Path, input_format: InputFormat) -> Iterator[InputRecord]:
    """The records of the file, in order; raises :class:`FileInputError` naming the place."""
    if input_format is InputFormat.ARRAY:
        return _read_array(path)
    return _read_ndjson(path)


def _read_ndjson(path: Path) -> Iterator[InputRecord]:
    with _open_input(path) as stream:
        number = 0
        try:
            for line in stream:
                number += 1
                if not line.strip(_WHITESPACE):
                    yield InputRecord(f"line {number}", None, line, blank=True)
                    continue
                try:
                    document = extjson.loads(line)
                except extjson.JSONDecodeError as exc:
                    raise FileInputError(
                        f"{path}: line {number}: invalid JSON: {exc.msg} at column {exc.colno}"
                    ) from None
                yield InputRecord(f"line {number}", document, line)
        except OSError as exc:
            raise FileInputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_array(path: Path) -> Iterator[InputRecord]:
    with _open_input(path) as stream:
        try:
            content = stream.read()
        except OSError as exc:
            raise FileInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        documents = extjson.loads(content)
    except extjson.JSONDecodeError as exc:
        raise FileInputError(
            f"{path}: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    del content
    if not isinstance(documents, list):
        raise FileInputError(f"{path}: expected a JSON array of documents")
    for index, document in enumerate(documents):
        yield InputRecord(f"index {index}", document, None)


def _new_file_mode(path: Path) -> int:
    """The mode ``cp`` would give ``path``: an existing file's own, else 0666 less the
    umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


class AtomicOutput:
    """A file that appears at ``path`` complete, or not at all (with the mode ``cp`` gives).

    Bytes go to a temporary file beside ``path``; :meth:`commit` fsyncs it and renames it
    over ``path``. Leaving the ``with`` block without a commit removes the temporary file.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        directory = path.parent
        fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        self._temp_path = Path(temp_name)
        try:
            os.fchmod(fd, _new_file_mode(path))  # mkstemp's 0600 is for secrets
        except OSError:
            os.close(fd)
            self._temp_path.unlink(missing_ok=True)
            raise
        self._stream: BinaryIO = os.fdopen(fd, "wb", buffering=_READ_BUFFER)
        self._committed = False

    def write(self, data: bytes) -> None:
        self._stream.write(data)

    def commit(self) -> None:
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        self._temp_path.replace(self._path)
        self._committed = True
        directory_fd = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(directory_fd)  # make the rename itself durable
        finally:
            os.close(directory_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._committed:
            return
        self._stream.close()
        self._temp_path.unlink(missing_ok=True)


class DocumentWriter:
    """Writes the documents back in the input's format, unchanged or changed."""

    def __init__(self, output: AtomicOutput, input_format: InputFormat) -> None:
        self._output = output
        self._format = input_format
        self._count = 0

    def unchanged(self, record: InputRecord) -> None:
        if record.raw is not None:
            self._output.write(record.raw)
        else:
            self._element(extjson.dumps(record.document))

    def changed(self, record: InputRecord, document: dict[str, Any]) -> None:
        encoded = extjson.dumps(document)
        if record.raw is not None:
            self._output.write(encoded + _line_ending(record.raw))
        else:
            self._element(encoded)

    def _element(self, encoded: bytes) -> None:
        self._output.write(b"[\n" if self._count == 0 else b",\n")
        self._output.write(encoded)
        self._count += 1

    def finish(self) -> None:
        if self._format is InputFormat.ARRAY:
            self._output.write(b"\n]\n" if self._count else b"[]\n")


def _line_ending(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return b"\r\n"
    if line.endswith(b"\n"):
        return b"\n"
    return b""
