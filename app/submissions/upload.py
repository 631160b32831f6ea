"""Streamed multipart upload: the size limit is enforced while reading (413), the file is hashed while it
is written to a temp file under the storage directory, and the temp file is removed on any failure.

Nothing is buffered in memory beyond one chunk and the small text fields, whatever the file size (U1, U2).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
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


class _Receiver:
    def __init__(self, out: Any, *, file_field: str, max_file_bytes: int) -> None:
        self.out = out
        self.file_field = file_field
        self.max_file_bytes = max_file_bytes
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.filename = ""
        self.fields: dict[str, str] = {}
        self.field_bytes = 0
        self.file_parts = 0
        self._headers: dict[str, str] = {}
        self._header_field = b""
        self._header_value = b""
        self._part_name = ""
        self._part_is_file = False
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
        self._part_is_file = False

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
        if self._part_name == self.file_field:
            self._part_is_file = True
            self.file_parts += 1
            if self.file_parts > 1:
                raise InvalidInput(f"send exactly one `{self.file_field}` part")
            raw = params.get(b"filename", b"").decode("utf-8", "replace")
            self.filename = os.path.basename(raw.replace("\\", "/"))[:255].replace("\x00", "")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._part_is_file:
            self.size += len(chunk)
            if self.size > self.max_file_bytes:
                raise PayloadTooLarge(f"file exceeds the limit of {self.max_file_bytes} bytes")
            if len(self.head) < HEAD_BYTES:
                self.head += chunk[: HEAD_BYTES - len(self.head)]
            self.digest.update(chunk)
            self.out.write(chunk)
        else:
            self.field_bytes += len(chunk)
            if self.field_bytes > MAX_FIELDS_BYTES:
                raise PayloadTooLarge(f"form fields exceed {MAX_FIELDS_BYTES} bytes")
            self._part_buf += chunk

    def on_part_end(self) -> None:
        if not self._part_is_file and self._part_name:
            try:
                self.fields[self._part_name] = self._part_buf.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"form field {self._part_name!r} is not UTF-8") from None


async def receive_upload(
    request: Request, *, tmp_dir: Path, max_file_bytes: int, file_field: str = "file"
) -> ReceivedUpload:
    """Stream a multipart/form-data body into a temp file under `tmp_dir`; raise 413/415/422 on bad input."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType("expected multipart/form-data with a boundary")
    check_content_length(request, max_file_bytes=max_file_bytes)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-", suffix=".part")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            receiver = _Receiver(out, file_field=file_field, max_file_bytes=max_file_bytes)
            parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
            async for chunk in request.stream():
                if chunk:
                    parser.write(chunk)
            parser.finalize()
        if receiver.file_parts == 0:
            raise InvalidInput(f"the `{file_field}` part is missing")
        if receiver.size == 0:
            raise InvalidInput("the uploaded file is empty")
    except MultipartParseError:
        path.unlink(missing_ok=True)
        raise InvalidInput("malformed multipart body") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return ReceivedUpload(
        path=path,
        sha256=receiver.digest.hexdigest(),
        size=receiver.size,
        filename=receiver.filename,
        head=receiver.head,
        fields=receiver.fields,
    )
