"""Strict, bounded JSON reading for prediction files, shared by the detection and Track 2 readers and by the
API's upload checks. Standard library and ijson (imported when first used) only.

Rules, enforced in one streaming pass (ijson events) before anything deeper is built:
- nesting deeper than MAX_DEPTH is refused at once (no recursion: a file nested 100,000 deep costs one pass);
- a key given twice in one object is refused, at any level (json would silently keep the last);
- a UTF-8 byte-order mark at the start is skipped (editors on Windows write one);
- NaN and Infinity are not JSON (the parser refuses them); invalid JSON names the text near the error.
Errors are FormatError with `source` (the participant's file name, never a server path) and, once the first
top-level key is read, `case` (that entry's key).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from worker.evaluation.errors import FormatError

MAX_DEPTH = 16  # a predictions file nests 5 deep ({case: {"points": [{"point": [...]}]}})
_BOM = b"\xef\xbb\xbf"


class _Builder:
    """Builds one value from ijson events; a key given twice in one object is an error."""

    def __init__(self, *, source: str, case: str | None) -> None:
        self.value: Any = None
        self._stack: list[Any] = []
        self._keys: list[str | None] = []
        self._source = source
        self._case = case

    def _put(self, value: Any) -> None:
        if not self._stack:
            self.value = value
            return
        top = self._stack[-1]
        if isinstance(top, list):
            top.append(value)
            return
        key = self._keys[-1]
        if key in top:
            raise FormatError(f"key {key!r} is given twice in one object", source=self._source, case=self._case)
        top[key] = value

    def event(self, event: str, value: Any) -> None:
        if event in ("start_map", "start_array"):
            container: Any = {} if event == "start_map" else []
            self._put(container)
            self._stack.append(container)
            self._keys.append(None)
        elif event in ("end_map", "end_array"):
            self._stack.pop()
            self._keys.pop()
        elif event == "map_key":
            self._keys[-1] = value
        else:
            self._put(value)


def _skip_bom(handle: IO[bytes]) -> None:
    if handle.read(len(_BOM)) != _BOM:
        handle.seek(0)


def _events(handle: IO[bytes], *, source: str, max_depth: int) -> Iterator[tuple[int, str, Any]]:
    """(depth after the event, event, value), refusing nesting deeper than `max_depth` as it is read."""
    import ijson

    _skip_bom(handle)
    depth = 0
    try:
        for _, event, value in ijson.parse(handle, use_float=True):
            if event in ("start_map", "start_array"):
                depth += 1
                if depth > max_depth:
                    raise FormatError(f"JSON nested too deeply (more than {max_depth} levels)", source=source)
            elif event in ("end_map", "end_array"):
                depth -= 1
            yield depth, event, value
    except ijson.JSONError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        near = f" near {lines[1][:80]!r}" if len(lines) > 1 else ""  # yajl quotes the text around the error
        raise FormatError(f"invalid JSON: {lines[0][:200] if lines else exc}{near}", source=source) from None
    except UnicodeDecodeError:
        raise FormatError("not UTF-8 text", source=source) from None


def object_entries(
    handle: IO[bytes], *, source: str, expected: str, max_depth: int = MAX_DEPTH
) -> Iterator[tuple[str, Any]]:
    """(key, value) of each entry of the top-level object, each value built only once its last event is read;
    a key given twice inside a value is refused (a top-level key given twice is the caller's to refuse, in its
    own words: a case, a stack). `expected` completes "expected a JSON object ..." for another document."""
    key = ""
    builder: _Builder | None = None
    first = True
    events = _events(handle, source=source, max_depth=max_depth)
    while True:
        try:
            depth, event, value = next(events)
        except StopIteration:
            return
        except FormatError as exc:
            if builder is not None and exc.case is None:  # name the entry being read (too deep, say)
                raise FormatError(exc.rule, source=exc.source, case=key) from None
            raise
        if first:
            first = False
            if event != "start_map":
                raise FormatError(f"expected a JSON object {expected}", source=source)
            continue
        if event == "map_key" and depth == 1:
            key, builder = value, _Builder(source=source, case=value)
        elif builder is not None:
            builder.event(event, value)
            if depth == 1:  # the entry's value is complete (a scalar, or its closing bracket)
                yield key, builder.value
                builder = None


def read_document(path: Path, *, source: str | None = None, max_depth: int = MAX_DEPTH) -> Any:
    """A whole JSON file, strict and bounded as above (for small files: a stack's list, a ground truth)."""
    name = source or path.name
    builder = _Builder(source=name, case=None)
    try:
        with path.open("rb") as handle:
            for _, event, value in _events(handle, source=name, max_depth=max_depth):
                builder.event(event, value)
    except OSError as exc:
        raise FormatError(f"cannot be read ({exc.strerror})", source=name) from None
    return builder.value
