"""Bounded input types shared by the schemas: strings without NUL (PostgreSQL text cannot hold them) and
sized to their columns, ids that fit a 32-bit column."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, StringConstraints

MAX_ID = 2_147_483_647
NO_NUL = r"^[^\x00]*$"

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
Title = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=NO_NUL)]
LongText = Annotated[str, StringConstraints(max_length=20_000, pattern=NO_NUL)]
ShortText = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)]
Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s\x00]{1,64}@[^@\s\x00]{1,189}$")]
# The policy itself (app.auth.policy) is checked by the service, with messages that say what to do.
Password = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
Url = Annotated[str, StringConstraints(max_length=500, pattern=r"^(https?://[^\s\x00]+)?$")]
GroupLabel = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
ServerPath = Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=r"^/[^\x00]*$")]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


class StrictInput(BaseModel):
    """A request body: a field it does not know is an error (422 naming it), never silently dropped."""

    model_config = ConfigDict(extra="forbid")
