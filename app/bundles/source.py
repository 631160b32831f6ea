"""Reading a bundle file: YAML (safe loader) validated against app.bundles.schema, every error one line that
names the file, the line and the field, e.g. ``challenge.yaml:14: phases[0].daily_quota: Input should be
greater than or equal to 0``. Relative test-set paths are resolved against the bundle's directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from app.bundles.schema import Bundle

MAX_BUNDLE_BYTES = 1024 * 1024

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
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
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
