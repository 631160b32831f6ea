"""What the upload route checks before it accepts a file: magic bytes per kind (Content-Type is never trusted),
the suffix a predictions file is stored with, and the 422 errors of refused files. The content checks
themselves are app.submissions.checks, run by app.submissions.checker.
"""

from __future__ import annotations

from app.errors import InvalidInput
from app.tables import SubmissionKind


class PredictionsInvalid(InvalidInput):
    code = "invalid_predictions"


class ArchiveInvalid(InvalidInput):
    code = "invalid_archive"


def predictions_suffix(head: bytes) -> str:
    """'.json' or '.csv' from the first bytes (the stored file keeps it; the scoring core reads by suffix)."""
    return ".json" if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{" else ".csv"


def check_magic(kind: SubmissionKind, head: bytes) -> None:
    """The file's first bytes must match its kind (Content-Type is never trusted)."""
    if kind is SubmissionKind.PREDICTIONS:
        if b"\x00" in head:
            raise InvalidInput("a predictions file must be JSON or CSV text")
        stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if stripped[:1] == b"{":
            return
        first_line = stripped.split(b"\n", 1)[0]
        if b"," in first_line and first_line.lower().startswith(b"image"):
            return
        raise InvalidInput("a predictions file must be a JSON object or a CSV starting with an `image,...` header")
    is_zip = head.startswith(b"PK\x03\x04")
    is_tar = len(head) >= 262 and head[257:262] == b"ustar"
    is_gzip = head.startswith(b"\x1f\x8b")
    is_zstd = head.startswith(b"\x28\xb5\x2f\xfd")
    is_xz = head.startswith(b"\xfd7zXZ\x00")
    if kind is SubmissionKind.MODEL and (is_zip or is_tar or is_gzip):
        return
    if kind is SubmissionKind.CONTAINER and (is_tar or is_gzip or is_zstd or is_xz):
        return
    expected = "a zip or tar(.gz) archive" if kind is SubmissionKind.MODEL else "an OCI/docker image tar archive"
    raise InvalidInput(f"a {kind.value} submission must be {expected}")


def check_model_magic(head: bytes) -> None:
    """A container submission's model tarball must be a tar archive, gzip-compressed or not."""
    if head.startswith(b"\x1f\x8b") or (len(head) >= 262 and head[257:262] == b"ustar"):
        return
    raise InvalidInput("model: a model tarball must be a .tar.gz (tar -czf model.tar.gz -C model .)")
