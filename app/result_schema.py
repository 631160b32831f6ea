"""The result fields of worker.result_fields as the API shows them: pydantic field definitions for a
submission's result and a leaderboard entry, and the metric columns of the CSV exports. The schemas in
app.submissions.schemas and app.leaderboard.schemas build their metric fields from here, so that a metric
added to the list appears in the JSON, the OpenAPI description and the CSVs without touching them.

A nullable field defaults to null; a field with `board_interval` gets `<name>_ci_low` and `<name>_ci_high`
right after it on the leaderboard. Imports pydantic and worker.result_fields only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field

from worker.result_fields import RESULT_FIELDS, ResultField


def _definition(python_type: type, nullable: bool, description: str) -> tuple[Any, Any]:
    if nullable:
        return python_type | None, Field(default=None, description=description)
    return python_type, Field(description=description)


def pydantic_fields(fields: Iterable[ResultField]) -> dict[str, Any]:
    """name -> (type, FieldInfo) for pydantic.create_model, in the order given."""
    return {f.name: _definition(f.python_type, f.nullable, f.description) for f in fields}


def board_field_names() -> tuple[str, ...]:
    """The metric keys of a leaderboard entry, in order: each field, its interval after it where shown."""
    names: list[str] = []
    for f in RESULT_FIELDS:
        names.append(f.name)
        if f.board_interval:
            names += [f"{f.name}_ci_low", f"{f.name}_ci_high"]
    return tuple(names)


def board_pydantic_fields() -> dict[str, Any]:
    """name -> (type, FieldInfo) of a leaderboard entry's metric fields (board_field_names)."""
    definitions: dict[str, Any] = {}
    for f in RESULT_FIELDS:
        definitions[f.name] = _definition(f.python_type, f.nullable, f.description)
        if f.board_interval:
            for end, word in (("low", "Lower"), ("high", "Upper")):
                definitions[f"{f.name}_ci_{end}"] = _definition(
                    float, True, f"{word} end of the 95% bootstrap interval of {f.name} over cases."
                )
    return definitions
