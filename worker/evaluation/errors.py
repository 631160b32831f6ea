"""The one error type of the scoring core's input layer. Standard library only."""

from __future__ import annotations


class FormatError(ValueError):
    """Invalid input: the message is one line naming the file, the case, the point and the rule broken.

    Attributes keep the parts apart so the API can return them as fields.
    """

    def __init__(
        self,
        rule: str,
        *,
        source: str | None = None,
        case: str | None = None,
        index: int | None = None,
        field: str | None = None,
    ) -> None:
        self.rule = rule
        self.source = source
        self.case = case
        self.index = index
        self.field = field
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.source:
            where.append(self.source)
        if self.case is not None:
            where.append(f"case {self.case!r}")
        if self.index is not None:
            where.append(f"point {self.index}")
        if self.field:
            where.append(self.field)
        prefix = ": ".join(where)
        return f"{prefix}: {self.rule}" if prefix else self.rule
