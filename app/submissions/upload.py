"""Streamed multipart upload: the size limit is enforced while reading (413), the file is hashed while it
is written to a temp file under the storage directory, and the temp file is removed on any failure.

Nothing is buffered in memory beyond one chunk and the small text fields, whatever the file size (U1, U2).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

MAX_FIELDS_BYTES = 64 * 1024  # all text fields together
# Content-Length may exceed the file limit by this much (boundaries, part headers, text fields)
ENVELOPE_BYTES = MAX_FIELDS_BYTES + 16 * 1024
HEAD_BYTES = 1024


@dataclass
class ReceivedUpload:
    """A file received into `path` (a temp file the caller must move or delete)."""

    path: Path
    sha256: str
    size: int
    filename: str
    head: bytes
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def check_content_length(request: Request, *, max_file_bytes: int) -> None:
    """413 before reading anything when the declared length cannot fit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise InvalidInput("invalid Content-Length") from None
        if length > max_file_bytes + ENVELOPE_BYTES:
            raise PayloadTooLarge(f"upload of {length} bytes exceeds the limit of {max_file_bytes} bytes")


@dataclass
class _Sink:
    """One file part being received: its temp file, hash, size and first bytes."""

    path: Path
    out: Any
    max_bytes: int
    filename: str = ""
    digest: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    head: bytes = b""

    def received(self, fields: dict[str, str]) -> ReceivedUpload:
        return ReceivedUpload(self.path, self.digest.hexdigest(), self.size, self.filename, self.head, fields)


class _Receiver:
    """Streams each part named in `limits` to its own temp file under `tmp_dir` (at most one part per name);
    every other part is a small text field."""

    def __init__(self, tmp_dir: Path, limits: Mapping[str, int]) -> None:
        self.tmp_dir = tmp_dir
        self.limits = dict(limits)
        self.sinks: dict[str, _Sink] = {}
        self.fields: dict[str, str] = {}
        self.field_bytes = 0
        self._headers: dict[str, str] = {}
        self._header_field = b""
        self._header_value = b""
        self._part_name = ""
        self._sink: _Sink | None = None
        self._part_buf = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._headers = {}
        self._part_buf = bytearray()
        self._part_name = ""
        self._sink = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value.decode("latin-1")
        self._header_field = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        self._part_name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._part_name in self.limits:
            if self._part_name in self.sinks:
                raise InvalidInput(f"send exactly one `{self._part_name}` part")
            fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-", suffix=".part")
            raw = params.get(b"filename", b"").decode("utf-8", "replace")
            self._sink = _Sink(Path(name), os.fdopen(fd, "wb"), self.limits[self._part_name])
            self._sink.filename = os.path.basename(raw.replace("\\", "/"))[:255].replace("\x00", "")
            self.sinks[self._part_name] = self._sink

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        sink = self._sink
        if sink is not None:
            sink.size += len(chunk)
            if sink.size > sink.max_bytes:
                raise PayloadTooLarge(f"{self._part_name}: file exceeds the limit of {sink.max_bytes} bytes")
            if len(sink.head) < HEAD_BYTES:
                sink.head += chunk[: HEAD_BYTES - len(sink.head)]
            sink.digest.update(chunk)
            sink.out.write(chunk)
        else:
            self.field_bytes += len(chunk)
            if self.field_bytes > MAX_FIELDS_BYTES:
                raise PayloadTooLarge(f"form fields exceed {MAX_FIELDS_BYTES} bytes")
            self._part_buf += chunk

    def on_part_end(self) -> None:
        if self._sink is not None:
            self._sink.out.close()
        elif self._part_name:
            try:
                self.fields[self._part_name] = self._part_buf.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"form field {self._part_name!r} is not UTF-8") from None

    def discard(self) -> None:
        for sink in self.sinks.values():
            sink.out.close()
            sink.path.unlink(missing_ok=True)


@dataclass
class ReceivedFiles:
    """The file parts received (by part name; each a temp file the caller must move or delete) and the text
    fields."""

    files: dict[str, ReceivedUpload]
    fields: dict[str, str]

    def discard(self) -> None:
        for upload in self.files.values():
            upload.discard()


async def receive_files(request: Request, *, tmp_dir: Path, limits: Mapping[str, int]) -> ReceivedFiles:
    """Stream a multipart/form-data body: each part named in `limits` (name -> its size limit) into a temp file
    under `tmp_dir`, at most one of each; raise 413/415/422 on bad input. Parts may be absent; an empty
    one is refused."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType("expected multipart/form-data with a boundary")
    check_content_length(request, max_file_bytes=sum(limits.values()))
    tmp_dir.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(tmp_dir, limits)
    try:
        parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
        for name, sink in receiver.sinks.items():
            sink.out.close()
            if sink.size == 0:
                raise InvalidInput("the uploaded file is empty" if name == "file" else f"{name}: the file is empty")
    except MultipartParseError:
        receiver.discard()
        raise InvalidInput("malformed multipart body") from None
    except BaseException:
        receiver.discard()
        raise
    return ReceivedFiles(
        {name: sink.received(receiver.fields) for name, sink in receiver.sinks.items()}, receiver.fields
    )


async def receive_upload(
    request: Request, *, tmp_dir: Path, max_file_bytes: int, file_field: str = "file"
) -> ReceivedUpload:
    """Stream a multipart/form-data body with exactly one file part `file_field` into a temp file under
    `tmp_dir`; raise 413/415/422 on bad input."""
    received = await receive_files(request, tmp_dir=tmp_dir, limits={file_field: max_file_bytes})
    if file_field not in received.files:
        raise InvalidInput(f"the `{file_field}` part is missing")
    return received.files[file_field]
