"""What every page's form needs: reading a posted field, and the problems
found in a form, each named by the id of the field it belongs to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problems:
    """Errors by field id, in the order they were found (the order of the
    error summary)."""

    by_field: dict[str, str] = field(default_factory=dict)

    def add(self, field_id: str, message: str) -> None:
        self.by_field.setdefault(field_id, message)

    def __bool__(self) -> bool:
        return bool(self.by_field)

    def listed(self) -> list[tuple[str, str]]:
        return list(self.by_field.items())


def text(form: dict[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""
