"""Reading a bundle file: YAML (safe loader) validated against app.bundles.schema, every error one line that
names the file, the line and the field, e.g. ``challenge.yaml:14: phases[0].daily_quota: Input should be
greater than or equal to 0``. Relative test-set paths are resolved against the bundle's directory.

The reader is bounded before anything is built from the text: at most MAX_BUNDLE_BYTES, no aliases (a
bundle needs none, and nested aliases expand exponentially), nesting at most MAX_DEPTH deep (checked on the
event stream, before the recursive composer runs), and a key given twice in one mapping is refused naming
the key and both lines (YAML would silently keep the last)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from app.bundles.schema import Bundle

MAX_BUNDLE_BYTES = 1024 * 1024
MAX_DEPTH = 32  # a bundle nests 5 deep (phases[0].scoring_options.x); lists of lists stay far below

Location = tuple[str | int, ...]


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the line and the field."""


def _lines(node: yaml.Node, here: Location = ()) -> dict[Location, int]:
    """Line (1-based) of every mapping value and sequence item, keyed by its path."""
    found = {here: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found.update(_lines(value, (*here, str(key.value))))
            found[(*here, str(key.value))] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.update(_lines(item, (*here, index)))
    return found


def _bounded_events(text: str, path: Path) -> None:
    """Refuse aliases and deep nesting on the parser's event stream (iterative: no recursion, no expansion)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark is not None else 1
        if isinstance(event, yaml.AliasEvent):
            raise BundleError(f"{path}:{line}: aliases (*{event.anchor}) are not allowed in a bundle; write it out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise BundleError(f"{path}:{line}: nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _no_duplicate_keys(node: yaml.Node, path: Path) -> None:
    todo = [node]
    while todo:
        current = todo.pop()
        if isinstance(current, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in current.value:
                name, line = str(key.value), key.start_mark.line + 1
                if isinstance(key, yaml.ScalarNode) and name in seen:
                    raise BundleError(f"{path}:{line}: key {name!r} is given twice (first on line {seen[name]})")
                seen[name] = line
                todo.append(value)
        elif isinstance(current, yaml.SequenceNode):
            todo.extend(current.value)


def field_name(loc: Location) -> str:
    """("phases", 0, "daily_quota") -> "phases[0].daily_quota"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def load_bundle(path: Path) -> Bundle:
    """The validated bundle at `path`; BundleError (one line per problem) otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{path}: larger than {MAX_BUNDLE_BYTES} bytes")
    text = raw.decode("utf-8", errors="replace")
    try:
        _bounded_events(text, path)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _no_duplicate_keys(node, path)
            data: Any = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BundleError(f"{path}{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict) or node is None:
        raise BundleError(f"{path}: a bundle is a YAML mapping with version, challenge, test_sets and phases")
    lines = _lines(node)
    for item in data.get("test_sets") or []:  # a path relative to the bundle (the same machine)
        if isinstance(item, dict) and isinstance(item.get("path"), str) and not item["path"].startswith("/"):
            item["path"] = str((path.parent / item["path"]).resolve())
    try:
        bundle = Bundle.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc: Location = tuple(error["loc"])
            while loc and loc not in lines:  # a missing field: the line of the mapping that lacks it
                loc = loc[:-1]
            line = lines.get(loc, 1)
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{path}:{line}: {field_name(tuple(error['loc']))}: {message}")
        raise BundleError("\n".join(problems)) from None
    return bundle
